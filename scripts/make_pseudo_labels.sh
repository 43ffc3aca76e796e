#!/bin/sh
# Stage 1 on ScribbleSup, one CUDA GPU: CAM pseudo-labels from the classes the scribbles reveal,
# then their distance map D_c, ready for scripts/train_r50_deeplabv2.sh.
#   1. image-level labels from the scribbles   -> DATA/class_labels_train.json
#   2. ResNet-50 CAM classifier (ImageNet init, IRN's recipe: batch 16, crop 512, lr 0.1 head /
#      0.01 backbone, 5 epochs)                -> LOGDIR/last_checkpoint.pth, curves.png
#   3. multi-scale + flip CAMs -> pseudo-labels -> DATA/PSEUDO/<id>.png (+ scores if the train
#      ids have SegmentationClassAug masks, a preview picture in LOGDIR)
#   4. D_c of the new pseudo-labels            -> DATA/distance_PSEUDO/<id>.png
# Every step resumes: rerunning the script continues the classifier (--resume auto) and labels
# only the ids without a PNG. After changing thresholds, delete PSEUDO and distance_PSEUDO.
# Environment: DATA (default dataset/ScribbleSup/VOC2012), PSEUDO (default cam_pseudo),
# LOGDIR (default log/cam_r50), PRETRAINED (imagenet | none | a ResNet-50 state_dict file),
# WORKERS (default 8). Then:
#   PSEUDO=cam_pseudo DIST_C=distance_cam_pseudo sh scripts/train_r50_deeplabv2.sh
. "$(dirname -- "$0")/env.sh"
set -e
DATA="${DATA:-dataset/ScribbleSup/VOC2012}"
PSEUDO="${PSEUDO:-cam_pseudo}"
LOGDIR="${LOGDIR:-log/cam_r50}"
WORKERS="${WORKERS:-8}"

python -m datasets.class_labels --root "$DATA"
python make_pseudo_labels.py train --dataset_path "$DATA" --logdir "$LOGDIR" \
    --layers 50 --pretrained "${PRETRAINED:-imagenet}" --output_stride 16 \
    --crop_size 512 --batchsize 16 --lr 0.1 --wdecay 1e-4 --epochs 5 \
    --workers "$WORKERS" --resume auto
python make_pseudo_labels.py label --dataset_path "$DATA" --checkpoint_path "$LOGDIR/last_checkpoint.pth" \
    --out "$PSEUDO" --workers "$WORKERS"
python -m datasets.distance_map --kind pseudo --src "$DATA/$PSEUDO" --dst "$DATA/distance_$PSEUDO" \
    --workers "$WORKERS"
echo "pseudo-labels in $DATA/$PSEUDO, D_c in $DATA/distance_$PSEUDO; train with:"
echo "  PSEUDO=$PSEUDO DIST_C=distance_$PSEUDO sh scripts/train_r50_deeplabv2.sh"
