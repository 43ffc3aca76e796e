#!/bin/sh
# The paper's best setting: DeepLabV3+ on ResNet-101, BMP pseudo-labels (75.85 mIoU in the
# paper, SPEC §8), otherwise the recipe of scripts/train_r50_deeplabv2.sh.
# Same environment variables as that script; LOGDIR defaults to log/train_r101_deeplabv3p.
export LOGDIR="${LOGDIR:-log/train_r101_deeplabv3p}"
exec sh "$(dirname -- "$0")/train_r50_deeplabv2.sh" --model_type deeplabv3p --layers 101 "$@"
