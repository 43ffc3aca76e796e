#!/bin/sh
# See CDSP work end to end in a few minutes, on CPU or GPU, with nothing to download:
#   1. .venv with the pinned requirements (first run only),
#   2. the synthetic dataset (SPEC §1 layout, both distance maps) in runs/quickstart/data,
#   3. ResNet-18 DeepLabV2 + LoRM trained with every CDSP loss (GPU if present, else CPU),
#   4. eval.py's multi-scale sliding-window evaluation of the best checkpoint,
# and prints where the report, the predictions, the curves and the checkpoint are.
# Everything it writes stays under runs/quickstart/; running it again starts over.
# Environment: EPOCHS (default 30) shortens or lengthens the run; OUT (default runs/quickstart)
# moves it. Extra arguments go to train.py.
. "$(dirname -- "$0")/env.sh"
set -e
OUT="${OUT:-runs/quickstart}"
EPOCHS="${EPOCHS:-30}"
rm -rf "$OUT/train" "$OUT/eval" "$OUT/eval.txt"

python -m datasets.synthetic --out "$OUT/data" --seed 0
python train.py --dataset_path "$OUT/data" --pseudo_path pseudo_label \
    --model_type deeplabv2 --layers 18 --pretrained none \
    --l_seg 1 --l_pseudo 1 --l_ds 1 --l_dc 1 --l_lorm 1 \
    --batchsize 8 --lr 0.01 --warmup 2 --epochs "$EPOCHS" --crop_size 129 --workers 2 \
    --val_interval 5 --logdir "$OUT/train" "$@"
# The paper's protocol (SPEC §7) scaled to the 128x160 images: long side 160*s, 129 window.
python eval.py --checkpoint_path "$OUT/train/best_checkpoint.pth" --dataset_path "$OUT/data" \
    --save_path "$OUT/eval" --base_size 160 --crop_size 129 --scales 0.75 1.0 1.25 \
    --workers 2 --overlay

echo
echo "quickstart done:"
echo "  report       $OUT/eval.txt  (+ $OUT/eval/metrics.json, iou_per_class.png, confusion_matrix.png)"
echo "  predictions  $OUT/eval/<id>.png  (overlays: $OUT/eval/overlay/)"
echo "  curves       $OUT/train/curves.png, $OUT/train/metrics.csv, TensorBoard: tensorboard --logdir $OUT/train/tb"
echo "  checkpoint   $OUT/train/best_checkpoint.pth (last: $OUT/train/last_checkpoint.pth)"
grep -m1 -i "miou" "$OUT/eval.txt" | sed 's/^/  val /'
