"""Stage 1 of CDSP: pseudo-labels from the classes the scribbles reveal (CAM), in the SPEC §1 layout.

    python -m datasets.class_labels --root DIR                 # which classes each image holds
    python make_pseudo_labels.py train --dataset_path DIR --logdir log/cam_r50
    python make_pseudo_labels.py label --dataset_path DIR --checkpoint_path log/cam_r50/last_checkpoint.pth \
                                       --out cam_pseudo
    torchrun --nproc_per_node N make_pseudo_labels.py train|label ...   # DDP / sharded, like train.py

The work is in stage1/: classifier.py (`train`) and labeller.py (`label`); this file is the
command line.

`train` fits the multi-label CAM classifier (models/cam.py: torchvision ResNet, ImageNet init by
default) to the image-level labels of <root>/class_labels_<split>.json (written by
datasets.class_labels; computed from the scribbles when absent), with the multi-label
soft-margin loss, SGD, warm-up + cosine lr per iteration (utils.engine: train.py's loop), and
validates each epoch with the per-class F1 of the val split's classes (from the full masks when
they exist, else the scribbles). Checkpoints, metrics.csv, curves.png and TensorBoard go to
--logdir (locked while the run lives; one holding a run needs --resume or --start_over, as
train.py's: docs/outputs.md); --resume auto continues exactly.

`label` writes <root>/<out>/<id>.png for every id of --split (mode P, VOC palette; values 0..C-1
and 255 = unsure): multi-scale + flip CAMs of the image's own classes, thresholded against
background, scribble pixels kept (datasets/cam_labels.py says why each rule). --out is label's
own folder (docs/outputs.md): never one the dataset reads (images, masks, scribbles, maps,
another pseudo-label folder), whatever --overwrite says. Ids whose PNG exists are skipped, so
an interrupted run resumes (--overwrite redoes them); each PNG is written atomically. At the
end it writes a preview picture (image | CAM | pseudo-label | mask) and, if the split has full
masks, scores the folder with datasets.score_labels (eval.py's metric code) into
<checkpoint dir>/pseudo_scores_<out>.json, beside the checkpoint in the classifier's log
folder (both names checked before the work starts). Then make D_c for the new folder with
datasets.distance_map and train with `train.py --pseudo_path <out> --distancemap_c <its D_c>`.
"""
from __future__ import annotations

import argparse
import math
import sys

from datasets.cam_labels import BG_THRESH, FG_THRESH
from datasets.layout import DatasetError
from models.cam import CAM_DEPTHS, CAM_SCALES, OUTPUT_STRIDE
from utils.checkpoint import CheckpointError
from utils.cli import run_main
from utils.device import DEVICE_HELP, device_flag
from utils.engine import add_engine_flags, check_engine_flags, end_run
from stage1.classifier import train
from stage1.labeller import label
from utils.training import TrainingError


# ----------------------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    sub = p.add_subparsers(dest="command", required=True)

    def common(s):
        a = s.add_argument
        a("--dataset_path", default="dataset/ScribbleSup/VOC2012", help="root of the SPEC §1 layout")
        a("--scribble_path", default="pascal_2012_scribble", help="scribble folder under the root")
        a("--class_labels", default=None,
          help="image-level labels JSON (default <root>/class_labels_<split>.json; computed from "
               "the scribbles when the file does not exist)")
        a("--workers", type=int, default=4)

    t = sub.add_parser("train", help="fit the CAM classifier to the scribbles' image-level labels")
    common(t)
    a = t.add_argument
    a("--train_path", default="train", help="train id list: a split name or a .txt path")
    a("--val_path", default="val", help="val id list ('none': no validation)")
    a("--layers", type=int, default=50, choices=CAM_DEPTHS, help="torchvision ResNet depth")
    a("--output_stride", type=int, default=OUTPUT_STRIDE, choices=(8, 16),
      help="CAM resolution: 16 (IRN) or 8 (small images)")
    a("--pretrained", default="imagenet", help="imagenet (torchvision IMAGENET1K_V1), none, or a file")
    a("--crop_size", type=int, default=512, help="IRN's 512: a whole VOC image fits, labels stay true")
    a("--scale_range", type=float, nargs=2, default=(0.7, 1.3), help="random rescale range")
    a("--batchsize", type=int, default=16, help="per process")
    a("--lr", type=float, default=0.1, help="head lr; the pretrained backbone gets lr/10 (IRN)")
    a("--wdecay", type=float, default=1e-4)
    a("--momentum", type=float, default=0.9)
    add_engine_flags(t, logdir="log/cam_r50", epochs=5, warmup=0, seed=0)

    lab = sub.add_parser("label", help="write CAM pseudo-labels for a split")
    common(lab)
    a = lab.add_argument
    a("--checkpoint_path", default="log/cam_r50/last_checkpoint.pth", help="a `train` checkpoint")
    a("--split", default="train", help="a split name or an id-list .txt path")
    a("--out", default="cam_pseudo", help="output folder: a name under the root, or a path")
    a("--scales", type=float, nargs="+", default=list(CAM_SCALES))
    a("--flip", action=argparse.BooleanOptionalAction, default=True, help="add the mirrored image")
    a("--fg_thresh", type=float, default=FG_THRESH, help="CAM score from which a class claims a pixel")
    a("--bg_thresh", type=float, default=BG_THRESH, help="CAM score below which a pixel is background")
    a("--scribble_override", action=argparse.BooleanOptionalAction, default=True,
      help="scribble pixels keep the scribble's class")
    a("--overwrite", action="store_true", help="redo ids whose pseudo-label already exists")
    a("--preview", type=int, default=6, help="images in the preview picture (0: none)")
    a("--trust_checkpoint", action="store_true", help="torch.load with weights_only=False")
    a("--device", default="auto", type=device_flag, help=DEVICE_HELP)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.command == "train":
        for name in ("batchsize", "crop_size"):
            if getattr(args, name) < 1:
                build_parser().error(f"--{name} must be >= 1")
        check_engine_flags(build_parser(), args)
    else:
        if not 0 <= args.bg_thresh <= args.fg_thresh:
            build_parser().error("need 0 <= --bg_thresh <= --fg_thresh")
        if not args.scales or not all(s > 0 and math.isfinite(s) for s in args.scales):
            build_parser().error(f"--scales must be positive numbers, got {args.scales}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    work = train if args.command == "train" else label
    try:
        hint = "lower --batchsize or --crop_size" if args.command == "train" else "use fewer or smaller --scales"
        return run_main(lambda: work(args), (DatasetError, CheckpointError, TrainingError),
                        "finished outputs are intact; rerun to continue", memory_hint=hint)
    finally:
        end_run()  # train's --logdir lock, however the run ended


if __name__ == "__main__":
    sys.exit(main())
