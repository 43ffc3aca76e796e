#!/bin/sh
# See CDSP work end to end in a few minutes, on CPU or GPU, with nothing to download:
#   1. .venv with the pinned requirements (first run only),
#   2. the synthetic dataset (SPEC §1 layout, both distance maps) in runs/quickstart/data,
#   3. ResNet-18 DeepLabV2 + LoRM trained with every CDSP loss (GPU if present, else CPU),
#   4. eval.py's multi-scale sliding-window evaluation of the best checkpoint,
# and prints where the report, the predictions, the curves and the checkpoint are.
# PSEUDO=cam adds stage 1 between 2 and 3, the whole chain from scribbles alone: image-level
# labels from the scribbles -> a CAM classifier (ResNet-18 from scratch) -> CAM pseudo-labels
# (scored against the masks) -> their D_c; training then uses those instead of the
# generator's pseudo-labels. Its default OUT is runs/quickstart_cam.
# Everything it writes stays under OUT; running it again starts over.
# Environment: EPOCHS (default 15) and CAM_EPOCHS (default 30) shorten or lengthen the runs;
# OUT (default runs/quickstart) moves them. Extra arguments go to train.py.
. "$(dirname -- "$0")/env.sh"
set -e
PSEUDO="${PSEUDO:-generator}"
case "$PSEUDO" in
    generator) OUT="${OUT:-runs/quickstart}"; PSEUDO_DIR=pseudo_label; DIST_C=distance_pseudo ;;
    cam) OUT="${OUT:-runs/quickstart_cam}"; PSEUDO_DIR=cam_pseudo; DIST_C=distance_cam_pseudo ;;
    *) echo "PSEUDO must be generator or cam, got '$PSEUDO'" >&2; exit 2 ;;
esac
EPOCHS="${EPOCHS:-15}"
rm -rf "$OUT/train" "$OUT/eval" "$OUT/eval.txt" "$OUT/cam"

python -m datasets.synthetic --out "$OUT/data" --seed 0
if [ "$PSEUDO" = cam ]; then
    rm -rf "$OUT/data/$PSEUDO_DIR" "$OUT/data/$DIST_C"
    python -m datasets.class_labels --root "$OUT/data"
    # 128x160 images: stride 8 CAMs, the whole image as the crop (labels stay true).
    python make_pseudo_labels.py train --dataset_path "$OUT/data" --logdir "$OUT/cam" \
        --layers 18 --pretrained none --output_stride 8 --crop_size 160 \
        --batchsize 8 --lr 0.1 --epochs "${CAM_EPOCHS:-30}" --workers 2
    python make_pseudo_labels.py label --dataset_path "$OUT/data" \
        --checkpoint_path "$OUT/cam/last_checkpoint.pth" --out "$PSEUDO_DIR" --workers 2
    python -m datasets.score_labels --root "$OUT/data" --labels pseudo_label \
        --json "$OUT/cam/pseudo_scores_generator.json" > /dev/null
    python -m datasets.distance_map --kind pseudo --src "$OUT/data/$PSEUDO_DIR" \
        --dst "$OUT/data/$DIST_C" --workers 2
fi
python train.py --dataset_path "$OUT/data" --pseudo_path "$PSEUDO_DIR" --distancemap_c "$DIST_C" \
    --model_type deeplabv2 --layers 18 --pretrained none \
    --l_seg 1 --l_pseudo 1 --l_ds 1 --l_dc 1 --l_lorm 1 \
    --batchsize 8 --lr 0.01 --warmup 2 --epochs "$EPOCHS" --crop_size 97 --workers 2 \
    --val_interval 5 --logdir "$OUT/train" "$@"
# The paper's protocol (SPEC §7) scaled to the 128x160 images: long side 160*s, 129 window.
python eval.py --checkpoint_path "$OUT/train/best_checkpoint.pth" --dataset_path "$OUT/data" \
    --save_path "$OUT/eval" --base_size 160 --crop_size 129 --scales 0.75 1.0 1.25 \
    --workers 2 --overlay

echo
echo "quickstart done:"
if [ "$PSEUDO" = cam ]; then
    echo "  stage 1      $OUT/cam/ (classifier, curves.png, train_cams.png, pseudo_preview_cam_pseudo.png)"
    python - "$OUT/cam" <<'PY'
import json, sys
for name, what in (("cam_pseudo", "CAM pseudo-labels"), ("generator", "generator's pseudo-labels")):
    s = json.load(open(f"{sys.argv[1]}/pseudo_scores_{name}.json"))
    print(f"  {what:<26} train mIoU {100 * s['miou']:.2f} (255 as background; {100 * s['unlabelled_fraction']:.1f} % left 255)")
PY
fi
echo "  report       $OUT/eval.txt  (+ $OUT/eval/metrics.json, iou_per_class.png, confusion_matrix.png)"
echo "  predictions  $OUT/eval/<id>.png  (overlays: $OUT/eval/overlay/)"
echo "  curves       $OUT/train/curves.png, $OUT/train/metrics.csv, TensorBoard: tensorboard --logdir $OUT/train/tb"
echo "  checkpoint   $OUT/train/best_checkpoint.pth (last: $OUT/train/last_checkpoint.pth)"
grep -m1 -i "miou" "$OUT/eval.txt" | sed 's/^/  val /'
