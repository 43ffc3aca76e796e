#!/bin/sh
# ACDC with WSL4MIS's expert scribbles, the literature's protocol, on one CUDA GPU: 5-fold
# cross-validation by patient (fold k validates patients 20(k-1)+1 .. 20k), 3-D Dice and HD95 per
# structure on whole volumes, pooled over the 200 volumes of the five validation folds.
# docs/acdc.md has the CPU-sized version of every step and what each one does.
#
#   git clone https://github.com/HiLab-git/WSL4MIS
#   sh scripts/train_acdc.sh                    # CDSP, folds 1-5, R50 DeepLabV2, 257 crops
#   VARIANT=pce FOLDS="1" sh scripts/train_acdc.sh --epochs 10    # one fold of pCE alone
#
# Not yet run on a GPU: the settings below are a starting point, not a tuned recipe.
# Overrides (environment):
#   WSL4MIS    the clone                      (WSL4MIS)
#   DATA       the imported dataset           (dataset/ACDC)
#   LOGDIR     runs: LOGDIR/<variant>_fold<k>, evaluations LOGDIR/<variant>_fold<k>.eval  (log/acdc)
#   FOLDS      folds to run                    ("1 2 3 4 5")
#   VARIANT    cdsp (all five losses) | pce (scribbles only) | rw (+ random-walker CE) | del (+ DEL)
#   EPOCHS     epochs per fold (100: about 9.5k iterations of batch 16)
#   PRETRAINED imagenet | none | a local ResNet-50 state_dict (imagenet)
# Extra arguments go to train.py. Each step skips what is done (rerun to continue).
set -e
. "$(dirname -- "$0")/env.sh"
WSL4MIS=${WSL4MIS:-WSL4MIS}
DATA=${DATA:-dataset/ACDC}
LOGDIR=${LOGDIR:-log/acdc}
FOLDS=${FOLDS:-"1 2 3 4 5"}
VARIANT=${VARIANT:-cdsp}
case "$VARIANT" in   # loss weights: pseudo CE, DEL on D_s and D_c, LoRM (pCE is always 1)
    pce)  L_PSEUDO=0 L_DEL=0 L_LORM=0 ;;
    rw)   L_PSEUDO=1 L_DEL=0 L_LORM=0 ;;
    del)  L_PSEUDO=1 L_DEL=1 L_LORM=0 ;;
    cdsp) L_PSEUDO=1 L_DEL=1 L_LORM=1 ;;
    *) echo "VARIANT must be pce, rw, del or cdsp, got $VARIANT" >&2; exit 2 ;;
esac

# 1. the 200 h5 volumes -> PNG slices, dataset.yaml, the five folds' lists, the volume index
python -m datasets.import_volumes --wsl4mis "$WSL4MIS/data/ACDC" --out "$DATA" --folds 5 --fold 1
# 2. random-walker pseudo-labels of every slice (fold 1's train + val lists hold them all), the maps
python -m datasets.random_walker --root "$DATA" --split train
python -m datasets.random_walker --root "$DATA" --split val
python -m datasets.distance_map --kind scribble --src "$DATA/pascal_2012_scribble" --dst "$DATA/distance_map"
python -m datasets.distance_map --kind pseudo --src "$DATA/random_walker" --dst "$DATA/distance_random_walker"

# 3. per fold: train (R50 DeepLabV2, 257 crops: a whole slice, 8k+1 for LoRM's grid), then score
#    the last checkpoint the field's way (each slice at its own size, one scale, 3-D per volume)
for k in $FOLDS; do
    RUN="$LOGDIR/${VARIANT}_fold$k"
    python train.py --dataset_path "$DATA" --train_path "train_fold$k" --val_path "val_fold$k" \
        --pseudo_path random_walker --distancemap_s distance_map --distancemap_c distance_random_walker \
        --l_pseudo "$L_PSEUDO" --l_ds "$L_DEL" --l_dc "$L_DEL" --l_lorm "$L_LORM" --model_type deeplabv2 --layers 50 --pretrained "${PRETRAINED:-imagenet}" \
        --batchsize 16 --lr 1e-3 --momentum 0.9 --wdecay 5e-4 --epochs "${EPOCHS:-100}" --warmup 5 \
        --crop_size 257 --workers "${WORKERS:-8}" --seed 1000 --val_interval 10 \
        --logdir "$RUN" --resume auto "$@"
    python eval.py --checkpoint_path "$RUN/last_checkpoint.pth" --dataset_path "$DATA" --split "val_fold$k" \
        --save_path "$RUN.eval" --scales 1.0 --workers "${WORKERS:-8}"
done

# 4. the five folds pooled: mean ± std over every validated volume, per structure
python - "$LOGDIR" "$VARIANT" $FOLDS <<'EOF'
import csv, math, sys
logdir, variant, folds = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = [r for k in folds for r in csv.DictReader(open(f"{logdir}/{variant}_fold{k}.eval/cases.csv"))]
print(f"{variant}, folds {' '.join(folds)}: {len({r['case'] for r in rows})} volumes; mean ± std over volumes")
for metric in ("dice", "hd95"):
    for name in dict.fromkeys(r["class"] for r in rows):
        v = [float(r[metric]) * (100 if metric == "dice" else 1) for r in rows if r["class"] == name and r[metric]]
        m = sum(v) / len(v)
        s = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else float("nan")
        print(f"  {metric:5s} {name:4s} {m:7.2f} ± {s:6.2f}  ({len(v)} volumes)")
EOF
