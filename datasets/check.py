"""Dataset checker for the ScribbleSup layout (SPEC §1), run by train.py / eval.py at start-up.

    python -m datasets.check --root VOC2012 [--pseudo NAME] [--split train|val|all] [--quick]
                             [--numclasses N]   (--num-classes N also accepted)
                             [--l_seg W --l_pseudo W --l_ds W --l_dc W --l_lorm W]

For every id of a split list, every file the split needs exists and has the image's size
(header read only). The deep check (default; --quick skips it) also decodes every file and
checks label values (scribble, pseudo, mask) are in {0..C-1, 255}: utils.labels' rule, through
datasets.layout.check_label_values like everything that reads labels. Problems name the file;
the CLI prints the first ones and counts per kind, and exits 1 if there are any.

Fields per split, unless the caller says otherwise: train -> image, scribble, dist_s, dist_c
(+ pseudo when a pseudo-label folder is named); val -> image, mask. Any split not named
"val" is treated as a training split. Given any of train.py's loss weights (the others default
to train.py's 1), the train split is checked for exactly what that run reads
(`training_fields`): e.g. `--l_pseudo 0 --l_ds 0 --l_dc 0 --l_lorm 0` (pCE alone) needs only
the images and scribbles.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
from dataclasses import dataclass, field
from typing import Sequence

from tqdm import tqdm

from datasets.layout import (DEFAULT_FOLDERS, FIELDS, LABEL_FIELDS, NUM_CLASSES, DatasetError, Layout, check_label_values,
                             read_ids, split_path)
from utils.io import image_size, read_image, read_label

KINDS = ("id_list", "missing", "unreadable", "size", "label_value")


@dataclass(frozen=True)
class Problem:
    kind: str      # one of KINDS
    path: str      # the file (or folder / id list) at fault
    message: str   # names the file and says what is wrong

    def __str__(self) -> str:
        return self.message


def default_fields(split: str, pseudo: bool = False) -> tuple[str, ...]:
    """The fields a split's consumer reads: validation needs masks, training the rest."""
    if os.path.splitext(os.path.basename(split))[0] == "val":
        return ("image", "mask")
    return ("image", "scribble", "dist_s", "dist_c") + (("pseudo",) if pseudo else ())


def training_fields(l_seg: float = 1.0, l_pseudo: float = 1.0, l_ds: float = 1.0, l_dc: float = 1.0,
                    l_lorm: float = 1.0) -> tuple[str, ...]:
    """The fields train.py reads with these loss weights: the non-zero loss terms' fields
    (CDSPLoss.required_fields) and, with LoRM, the model's own input (the pseudo-label)."""
    from losses import CDSPLoss
    from models import LORM_INPUTS
    need = set(CDSPLoss(l_seg, l_pseudo, l_ds, l_dc, l_lorm).required_fields()) | set(LORM_INPUTS if l_lorm else ())
    return tuple(f for f in FIELDS if f in need)


def _hw(hw: tuple[int, int]) -> str:
    return f"{hw[1]}x{hw[0]}"


def _check_file(path: str, name: str, deep: bool, num_classes: int):
    """((H, W), problems) of one file; (None, [problem]) when it is missing or unreadable."""
    try:
        if not deep:
            return image_size(path), []
        arr = read_image(path) if name == "image" else read_label(path)
    except FileNotFoundError:
        return None, [Problem("missing", path, f"{path}: {name} file not found")]
    except OSError as e:  # utils.io messages start with the path
        return None, [Problem("unreadable", path, str(e))]
    problems = []
    if name in LABEL_FIELDS:
        try:
            check_label_values(arr, num_classes, path, what=name)
        except DatasetError as e:
            problems.append(Problem("label_value", path, str(e)))
    return arr.shape[:2], problems


def check_split(layout: Layout, ids: list[str], fields: Sequence[str], num_classes: int = NUM_CLASSES,
                deep: bool = True, progress: bool = False) -> list[Problem]:
    """Problems with the files of `ids` for `fields` (a missing folder is one problem, not one per id)."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)}; known: {FIELDS}")
    # The image first: it is the size every other file must have.
    fields = sorted(dict.fromkeys(fields), key=lambda f: f != "image")
    problems = []
    present = []
    for name in fields:
        folder = layout.folder(name)
        if os.path.isdir(folder):
            present.append(name)
        else:
            problems.append(Problem("missing", folder, f"{folder}: {name} folder not found "
                                                       f"({len(ids)} ids need it)"))
    for id_ in tqdm(ids, desc="checking", unit="id", disable=not progress):
        ref = None  # (hw, name, path) of the first readable file, the image when there is one
        for name in present:
            path = layout.path(name, id_)
            hw, found = _check_file(path, name, deep, num_classes)
            problems += found
            if hw is None:
                continue
            if ref is None:
                ref = (hw, name, path)
            elif hw != ref[0]:
                problems.append(Problem("size", path, f"{path}: {name} is {_hw(hw)} but {ref[1]} "
                                                      f"{ref[2]} is {_hw(ref[0])} (WxH)"))
    return problems


@dataclass
class CheckReport:
    root: str
    deep: bool
    problems: list[Problem] = field(default_factory=list)
    ids_checked: dict[str, int] = field(default_factory=dict)     # split -> number of ids
    fields: dict[str, tuple[str, ...]] = field(default_factory=dict)  # split -> fields checked
    classes: str = ""  # what label values were checked against, for the summary

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        return dict(collections.Counter(p.kind for p in self.problems))

    def summary(self, max_shown: int = 20) -> str:
        splits = ", ".join(f"{s} {n} ids [{', '.join(self.fields.get(s, ()))}]"
                           for s, n in self.ids_checked.items()) or "no ids"
        head = f"dataset {self.root} ({'deep' if self.deep else 'quick'} check): {splits}"
        if self.classes:
            head += f"\nlabels: {self.classes}"
        if self.ok:
            return f"{head}\nOK: no problems"
        counts = ", ".join(f"{k} {n}" for k, n in self.counts().items())
        lines = [head, f"{len(self.problems)} problem(s): {counts}"]
        lines += [f"  {p.kind}: {p.message}" for p in self.problems[:max_shown]]
        if len(self.problems) > max_shown:
            lines.append(f"  ... and {len(self.problems) - max_shown} more")
        return "\n".join(lines)


def check_dataset(root: str, splits: Sequence[str] = ("train", "val"), pseudo: str | None = None,
                  folders: dict | None = None, num_classes: int | None = None, deep: bool = True,
                  fields_by_split: dict | None = None, progress: bool = False) -> CheckReport:
    """Check every split of `root`; `pseudo` names the pseudo-label folder (checked for training)."""
    report = CheckReport(root=root, deep=deep)
    if not os.path.isdir(root):
        report.problems.append(Problem("missing", root, f"{root}: dataset root not found"))
        return report
    try:
        layout = Layout(root, {**(folders or {}), **({"pseudo": pseudo} if pseudo else {})})
    except DatasetError as e:  # a dataset.yaml that cannot be used
        report.problems.append(Problem("description", root, str(e)))
        return report
    meta = layout.meta
    if num_classes is None:
        num_classes = meta.num_classes
    report.classes = (f"{num_classes} classes ({meta.preview(8)}; {meta.source})" if num_classes == meta.num_classes
                      else f"{num_classes} classes (--numclasses)") + ", 255 ignored"
    for split in splits:
        fields = tuple((fields_by_split or {}).get(split) or
                       default_fields(split, layout.folders["pseudo"] is not None))
        report.fields[split] = fields
        path = split_path(root, split)
        try:
            ids = read_ids(path)
        except DatasetError as e:
            report.problems.append(Problem("id_list", path, str(e)))
            report.ids_checked[split] = 0
            continue
        for id_, n in collections.Counter(ids).items():
            if n > 1:
                report.problems.append(Problem("id_list", path, f"{path}: id '{id_}' listed {n} times"))
        ids = list(dict.fromkeys(ids))
        report.ids_checked[split] = len(ids)
        report.problems += check_split(layout, ids, fields, num_classes, deep, progress)
    return report


def require_dataset(root: str, splits: Sequence[str] = ("train", "val"), pseudo: str | None = None,
                    folders: dict | None = None, num_classes: int | None = None, deep: bool = True,
                    fields_by_split: dict | None = None) -> CheckReport:
    """check_dataset, raising DatasetError with the summary when anything is wrong."""
    report = check_dataset(root, splits, pseudo, folders, num_classes, deep, fields_by_split)
    if not report.ok:
        raise DatasetError(report.summary())
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m datasets.check", description=__doc__.split("\n")[0])
    ap.add_argument("--root", required=True, help="dataset root (VOC2012 in the ScribbleSup layout)")
    ap.add_argument("--pseudo", "--pseudo_path", dest="pseudo", default=None,
                    help="pseudo-label folder under root, checked for train")
    # the other folders under train.py's flag names, so the check reads what a run will read
    for flag, field in (("--scribble_path", "scribble"), ("--distancemap_s", "dist_s"),
                        ("--distancemap_c", "dist_c"), ("--mask_path", "mask")):
        ap.add_argument(flag, dest=field, default=None,
                        help=f"{field} folder under root (default {DEFAULT_FOLDERS[field]})")
    ap.add_argument("--split", default="all", choices=("train", "val", "all"))
    ap.add_argument("--quick", action="store_true",
                    help="existence and header sizes only (no decoding, no label values)")
    ap.add_argument("--numclasses", "--num-classes", dest="num_classes", type=int, default=None,
                    help="label values must be 0..N-1 or 255 (default: the classes of <root>/dataset.yaml, "
                         f"else {NUM_CLASSES}; as train.py's --numclasses)")
    ap.add_argument("--max-shown", type=int, default=20, help="problems listed (all are counted)")
    weights = ("l_seg", "l_pseudo", "l_ds", "l_dc", "l_lorm")
    for w in weights:  # train.py's loss weights: check what that run reads
        ap.add_argument(f"--{w}", *(["--l_pesudo"] if w == "l_pseudo" else []), dest=w, type=float, default=None,
                        help=f"train.py's {w} (default 1 once any weight is given): check only what it reads")
    args = ap.parse_args(argv)
    splits = ("train", "val") if args.split == "all" else (args.split,)
    folders = {f: getattr(args, f) for f in ("scribble", "dist_s", "dist_c", "mask") if getattr(args, f)}
    by_split = None
    if any(getattr(args, w) is not None for w in weights):
        given = {w: 1.0 if getattr(args, w) is None else getattr(args, w) for w in weights}
        try:
            fields = training_fields(**given)
        except ValueError as e:  # every weight 0
            ap.error(str(e))
        if "pseudo" in fields and not args.pseudo:
            ap.error("--pseudo_path is required when --l_pseudo or --l_lorm is non-zero (as in train.py)")
        by_split = {s: fields for s in splits if s != "val"}
    report = check_dataset(args.root, splits, pseudo=args.pseudo, folders=folders, num_classes=args.num_classes,
                           deep=not args.quick, fields_by_split=by_split, progress=True)
    print(report.summary(args.max_shown), file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
