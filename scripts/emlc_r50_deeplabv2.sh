#!/bin/sh
# Evaluate the authors' released ResNet-50 DeepLabV2 checkpoint (paper: 73.92 mIoU, SPEC §8) on
# VOC2012 val with the paper's protocol (SPEC §7: seven scales, 465 windows, stride 2/3).
#
# Put the released last_checkpoint.pth in log/train_deeplabv2_r50/ (where the authors' scripts
# expect it), the data in dataset/ScribbleSup/VOC2012, then:  sh scripts/emlc_r50_deeplabv2.sh
# Writes emlc_r50_deeplabv2/<id>.png (+ metrics.json, pictures) and emlc_r50_deeplabv2.txt.
#
# Overrides (environment; relative paths are relative to the repository root):
#   CHECKPOINT  checkpoint file  (log/train_deeplabv2_r50/last_checkpoint.pth)
#   DATA        dataset root     (dataset/ScribbleSup/VOC2012)
#   SAVE_PATH   output prefix    (emlc_r50_deeplabv2)
#   NPROC       processes/GPUs   (1; N > 1 runs torchrun, each image is scored once)
# Extra arguments go to eval.py and override the flags below, e.g. --crop_batch 4 --overlay.
. "$(dirname -- "$0")/env.sh"
CHECKPOINT=${CHECKPOINT:-log/train_deeplabv2_r50/last_checkpoint.pth}
DATA=${DATA:-dataset/ScribbleSup/VOC2012}
SAVE_PATH=${SAVE_PATH:-emlc_r50_deeplabv2}
NPROC=${NPROC:-1}
# Extra arguments come last, so they win over these.
set -- --layers 50 --model_type deeplabv2 --numclasses 21 --workers 4 --split val --base_size 512 --crop_size 465 \
    --dataset_path "$DATA" --checkpoint_path "$CHECKPOINT" --save_path "$SAVE_PATH" "$@"
if [ "$NPROC" -gt 1 ]; then
    exec python -m torch.distributed.run --standalone --nproc_per_node "$NPROC" eval.py "$@"
fi
exec python eval.py "$@"
