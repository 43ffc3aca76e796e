"""Score a folder of label maps (pseudo-labels, predictions) against the full masks (SPEC §7
metrics, the same code as eval.py: utils.metrics).

    python -m datasets.score_labels --root VOC2012 --labels NAME [--split train|val] [--json FILE]

NAME is a folder under root (<root>/<NAME>/<id>.png) or a path. For every id of the split
(default train: pseudo-labels exist for train), <NAME>/<id>.png is compared with
<root>/SegmentationClassAug/<id>.png: mIoU, per-class IoU / precision / recall, pixel accuracy.
When the dataset.yaml names `metrics` (Dice, HD95, ASSD: utils.metrics), they are added per case
-- whole volumes when the dataset has a volume index (datasets.volumes), else per image -- with
mean ± std over cases; `--csv FILE` writes the per-case table.

Ground-truth 255 is ignored. A 255 in the scored labels means "unlabelled": those pixels are
SCORED AS BACKGROUND (class 0), the usual way BMP / AFA / SEAM pseudo-labels are compared, and
the fraction of (non-ignored) ground-truth pixels the labels leave 255 is reported next to the
scores. A missing or unreadable file, a label whose size differs from its mask, or a value
outside {0..C-1, 255} is an error naming the file: exit 1. --json replaces only a scores file
(docs/outputs.md): a folder, a file inside the label or dataset folders, or a file of
someone else's is refused before any work.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
from tqdm import tqdm

from datasets.layout import (CLASSES, IGNORE_INDEX, NUM_CLASSES, DatasetError, Layout,
                             check_label_values, read_ids, split_path)
from datasets.meta import load_meta
from datasets.volumes import cases_of, score_cases
from utils import dist
from utils.io import OutputError, atomic_path, read_label
from utils.metrics import CASES_CSV_HEAD, ConfusionMeter, format_report, nan_to_none, pct
from utils.outputs import claim_output_file, json_of

UNLABELLED_NOTE = "labels' 255 (unlabelled) pixels are scored as background"
TOOL = "datasets.score_labels"


def labels_folder(root: str, name: str) -> str:
    """<root>/<name> if it is a folder, else `name` as a path; DatasetError if neither exists."""
    for folder in (os.path.join(root, name), name):
        if os.path.isdir(folder):
            return folder
    raise DatasetError(f"{os.path.join(root, name)}: label folder not found")


def _read(path: str, num_classes: int) -> np.ndarray:
    try:
        arr = read_label(path)
    except OSError as e:  # utils.io messages start with the path
        raise DatasetError(str(e)) from None
    check_label_values(arr, num_classes, path)
    return arr


class LabelScorer:
    """The scores of this module, accumulated one (labels, mask) pair at a time: utils.metrics'
    confusion matrix with ground-truth 255 ignored and the labels' 255 scored as background.
    datasets.synthetic scores its pseudo-labels with it, so both print the same mIoU."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        self.meter = ConfusionMeter(num_classes, IGNORE_INDEX)
        self.images = self.unlabelled = self.valid = 0

    def add(self, labels: np.ndarray, mask: np.ndarray) -> None:
        """One image: label map and full mask, uint8 (H, W) of the same shape, values checked."""
        scored = mask != IGNORE_INDEX
        hole = labels == IGNORE_INDEX
        self.unlabelled += int(np.count_nonzero(hole & scored))
        self.valid += int(np.count_nonzero(scored))
        labels = np.where(hole, 0, labels).astype(np.uint8)  # unlabelled -> background (docstring)
        self.meter.update(torch.from_numpy(labels), torch.tensor(mask))  # mask may be read-only
        self.images += 1

    def all_reduce(self) -> "LabelScorer":
        """Sum the counts over all ranks (each scored its own share of the ids)."""
        self.meter.all_reduce()
        counts = dist.all_reduce_sum(torch.tensor([self.images, self.unlabelled, self.valid], dtype=torch.float64))
        self.images, self.unlabelled, self.valid = (int(v) for v in counts.tolist())
        return self

    def scores(self) -> dict:
        """utils.metrics.scores(...) plus "images", "unlabelled_fraction", "confusion"."""
        out = self.meter.scores()
        out.update(images=self.images,
                   unlabelled_fraction=self.unlabelled / self.valid if self.valid else float("nan"),
                   confusion=self.meter.conf.tolist())
        return out


def score_labels(root: str, labels: str, split: str = "train", mask_folder: str | None = None,
                 num_classes: int | None = None, progress: bool = False, csv_path: str | None = None,
                 sharded: bool = False) -> dict:
    """Scores of the label folder `labels` (name under root, or a path) against the masks.

    Returns utils.metrics.scores(...) (fractions) plus "images", "unlabelled_fraction" (GT
    pixels, 255 excluded, that the labels leave 255) and "confusion" (C x C list), and, when the
    description names `metrics`, "cases": utils.metrics.CaseTable.summary() (the per-case table
    also written to `csv_path`). Labels' 255 pixels are scored as background. num_classes
    defaults to the root's description. Raises DatasetError naming the file at fault. `sharded`
    (under torchrun, every rank calls it): each rank scores its share of the ids (of the cases,
    with per-case metrics), and the counts and case rows of every rank are combined.
    """
    folder = labels_folder(root, labels)
    layout = Layout(root, {"mask": mask_folder})
    meta = layout.meta
    num_classes = meta.num_classes if num_classes is None else num_classes
    ids = list(dict.fromkeys(read_ids(split_path(root, split))))
    scorer = LabelScorer(num_classes)

    def read(id_):
        path = os.path.join(folder, id_ + ".png")
        mask_path = layout.path("mask", id_)
        lab, gt = _read(path, num_classes), _read(mask_path, num_classes)
        if lab.shape != gt.shape:
            raise DatasetError(f"{path}: size {lab.shape[1]}x{lab.shape[0]} (WxH) differs from its mask"
                               f" {mask_path} ({gt.shape[1]}x{gt.shape[0]})")
        scorer.add(lab, gt)
        return np.where(lab == IGNORE_INDEX, 0, lab), gt  # unlabelled -> background, as scorer.add

    name = os.path.basename(os.path.normpath(folder))
    if meta.metrics:
        cases = cases_of(root, ids, meta)
        table = score_cases(cases, read, meta, progress, sharded)
        if csv_path:
            table.write_csv(csv_path)
    else:
        table = None
        for id_ in tqdm(ids[dist.rank()::dist.world_size()] if sharded else ids, desc=f"scoring {name}",
                        unit="img", disable=not progress):
            read(id_)
    if sharded:
        scorer.all_reduce()
    out = scorer.scores()
    if table is not None:
        out["cases"] = table.summary()
        out["case_report"] = table.report(out["cases"])
    return out


def report(s: dict, class_names=CLASSES) -> str:
    """eval.py's report (utils.metrics.format_report), then precision / recall per class."""
    width = max(len(n) for n in class_names)
    lines = [format_report(s, class_names).rstrip("\n"),
             f"unlabelled (255) in labels: {pct(s['unlabelled_fraction'])} % of ground-truth pixels"
             f" ({UNLABELLED_NOTE})",
             f"{'class':<{width + 1}} {'IoU':>7} {'prec.':>7} {'recall':>7}"]
    lines += [f"{name:<{width + 1}} {pct(i):>7} {pct(p):>7} {pct(r):>7}"
              for name, i, p, r in zip(class_names, s["iou"], s["precision"], s["recall"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m datasets.score_labels", description=__doc__.split("\n")[0])
    ap.add_argument("--root", required=True, help="dataset root (VOC2012 in the ScribbleSup layout)")
    ap.add_argument("--labels", required=True, help="label folder: a name under root, or a path")
    ap.add_argument("--split", default="train", help="train, val, or an id-list .txt path")
    ap.add_argument("--mask", default=None, help="ground-truth folder under root (default SegmentationClassAug)")
    ap.add_argument("--json", default=None, help="also write the scores (fractions) as JSON here")
    ap.add_argument("--csv", default=None, help="also write the per-case scores here (datasets with `metrics`)")
    args = ap.parse_args(argv)
    try:
        classes = load_meta(args.root).classes
        # before any work: a folder, an input, a file we did not write are refused
        inputs = [labels_folder(args.root, args.labels), *Layout(args.root, {"mask": args.mask}).input_folders()]
        if args.json:
            claim_output_file(args.json, TOOL, "--json", is_scores_file, inputs)
        if args.csv:
            claim_output_file(args.csv, TOOL, "--csv", is_cases_file, inputs)
        s = score_labels(args.root, args.labels, args.split, args.mask, progress=True, csv_path=args.csv)
        print(f"{args.labels} vs ground truth, split {args.split}, {s['images']} images")
        print(report(s, classes), end="")
        if "case_report" in s:
            print(s.pop("case_report"), end="")
        if args.json:
            data = {"labels": args.labels, "split": args.split, "note": UNLABELLED_NOTE,
                    "classes": list(classes), **s}
            with atomic_path(args.json) as tmp, open(tmp, "w", encoding="utf-8") as f:
                f.write(json.dumps(nan_to_none(data), indent=1) + "\n")
            print(f"wrote {args.json}")
    except (DatasetError, OutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def is_cases_file(path: str) -> bool:
    """Whether `path` is a per-case CSV of ours (utils.metrics.CaseTable.write_csv)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().startswith(CASES_CSV_HEAD)
    except (OSError, UnicodeDecodeError):
        return False


def is_scores_file(path: str) -> bool:
    """Whether `path` holds scores this module (or make_pseudo_labels.py label) wrote."""
    data = json_of(path)
    return isinstance(data, dict) and data.get("note") == UNLABELLED_NOTE


if __name__ == "__main__":
    sys.exit(main())
