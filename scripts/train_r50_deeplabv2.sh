#!/bin/sh
# The paper's R50 DeepLabV2 setting (SPEC §6) on one CUDA GPU: BMP pseudo-labels, all CDSP
# losses, SGD lr 1e-3, batch 16, 50 epochs, 5 warm-up epochs then cosine, AMP.
# Override with environment variables:
#   DATA      dataset root in the ScribbleSup layout  (default dataset/ScribbleSup/VOC2012)
#   PSEUDO    pseudo-label folder under DATA           (default BMP)
#   DIST_C    its distance-map folder under DATA       (default distance_pseudo)
#   LOGDIR    checkpoints and logs                     (default log/train_r50_deeplabv2)
#   PRETRAINED imagenet | none | a local ResNet-50 state_dict (default imagenet)
# Extra arguments go to train.py, e.g. `sh scripts/train_r50_deeplabv2.sh --resume auto`.
. "$(dirname -- "$0")/env.sh"
python train.py \
    --model_type deeplabv2 --layers 50 \
    --dataset_path "${DATA:-dataset/ScribbleSup/VOC2012}" --pseudo_path "${PSEUDO:-BMP}" \
    --distancemap_s distance_map --distancemap_c "${DIST_C:-distance_pseudo}" \
    --l_seg 1 --l_pseudo 1 --label_smooth 0.1 --l_ds 1 --l_dc 1 --l_lorm 1 \
    --batchsize 16 --lr 1e-3 --momentum 0.9 --wdecay 5e-4 --epochs 50 --warmup 5 \
    --crop_size 465 --workers "${WORKERS:-8}" --seed 1000 \
    --pretrained "${PRETRAINED:-imagenet}" --logdir "${LOGDIR:-log/train_r50_deeplabv2}" "$@"
