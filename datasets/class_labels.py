"""Image-level class labels from the scribbles (SPEC §1 layout): which foreground classes each
training image contains, as a scribble annotator marked them.

    python -m datasets.class_labels --root VOC2012 [--split train] [--out FILE]

For every id of the split, the foreground classes (1..C-1) present in
<root>/pascal_2012_scribble/<id>.png; 0 (background) and 255 (unlabelled) are not foreground.
Writes {id: [class indices, ascending]} as JSON, atomically, to FILE (default
<root>/class_labels_<split>.json) and prints a summary: ids, mean classes per image, images
per class.

An id whose scribble has no foreground stroke (background only, or nothing at all) is a
warning, not an error: it is listed by id and counted on stderr, written with an empty list,
and the exit code stays 0. A missing or unreadable scribble, or a value outside
{0..C-1, 255}, is an error naming the file: exit 1 and no output file. --out replaces only a
class-labels file (docs/outputs.md): a folder, a file inside one of the dataset's folders, or
someone else's file is refused before any work; a full disk is one line.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys

import numpy as np
from tqdm import tqdm

from datasets.layout import CLASSES, IGNORE_INDEX, NUM_CLASSES, DatasetError, Layout, read_ids, split_path
from datasets.meta import load_meta
from utils.io import OutputError, atomic_path, read_label
from utils.labels import label_value_problem
from utils.outputs import claim_output_file, json_of

TOOL = "datasets.class_labels"


def image_classes(scribble: np.ndarray, num_classes: int = NUM_CLASSES) -> list[int]:
    """Sorted foreground classes (1..num_classes-1) present in a scribble label map.

    Background (0) and IGNORE_INDEX are skipped; a value outside 0..num_classes-1 that is not
    IGNORE_INDEX (utils.labels' rule) is a ValueError naming the values.
    """
    scribble = np.asarray(scribble)
    problem = label_value_problem(scribble, num_classes, IGNORE_INDEX)
    if problem:
        raise ValueError(problem)
    return [int(v) for v in np.unique(scribble) if 0 < v < num_classes]


def collect_class_labels(root: str, split: str = "train", folders: dict | None = None,
                         num_classes: int | None = None,
                         progress: bool = False) -> tuple[dict[str, list[int]], list[str]]:
    """({id: foreground classes} in split order, ids with no foreground stroke); num_classes
    defaults to the root's description (dataset.yaml, else VOC's 21).

    Raises DatasetError naming the file for a missing/unreadable scribble or a bad value.
    """
    layout = Layout(root, folders or {})
    num_classes = layout.meta.num_classes if num_classes is None else num_classes
    ids = list(dict.fromkeys(read_ids(split_path(root, split))))
    labels: dict[str, list[int]] = {}
    for id_ in tqdm(ids, desc=f"class labels ({split})", unit="img", disable=not progress):
        path = layout.path("scribble", id_)
        try:
            labels[id_] = image_classes(read_label(path), num_classes)
        except OSError as e:  # utils.io messages start with the path
            raise DatasetError(str(e)) from None
        except ValueError as e:
            raise DatasetError(f"{path}: {e}") from None
    no_fg = [i for i, c in labels.items() if not c]
    return labels, no_fg


def write_class_labels(labels: dict[str, list[int]], path: str) -> None:
    """JSON {id: [classes]}, written atomically (a killed run leaves no half file)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            # one id per line: readable and diff-able
            f.write("{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in labels.items())
                    + "\n}\n")


def is_class_labels_file(path: str) -> bool:
    """Whether `path` holds class labels as write_class_labels writes them ({id: [ints]})."""
    data = json_of(path)
    return isinstance(data, dict) and all(
        isinstance(v, list) and all(isinstance(c, int) for c in v) for v in data.values())


def summary(labels: dict[str, list[int]], classes=CLASSES) -> str:
    """Ids, mean classes per image, and the number of images containing each class (`classes`:
    the dataset's names, background first)."""
    counts = collections.Counter(c for cs in labels.values() for c in cs)
    n = len(labels)
    mean = sum(len(cs) for cs in labels.values()) / n if n else 0.0
    width = max([len(name) for name in classes[1:]] or [1])
    lines = [f"ids: {n}", f"mean foreground classes per image: {mean:.2f}", "images per class:"]
    lines += [f"  {c:2d} {classes[c] + ':':<{width + 1}} {counts.get(c, 0)}" for c in range(1, len(classes))]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m datasets.class_labels", description=__doc__.split("\n")[0])
    ap.add_argument("--root", required=True, help="dataset root (VOC2012 in the ScribbleSup layout)")
    ap.add_argument("--split", default="train", help="a split name or an id-list .txt path")
    ap.add_argument("--out", default=None, help="output JSON (default: <root>/class_labels_<split>.json)")
    ap.add_argument("--scribble", default=None, help="scribble folder under root (default pascal_2012_scribble)")
    args = ap.parse_args(argv)
    name = os.path.splitext(os.path.basename(args.split))[0]
    out = args.out or os.path.join(args.root, f"class_labels_{name}.json")
    try:
        meta = load_meta(args.root)
        meta.require_background("image-level labels (classes present besides background)")
        # before any work: a folder, a file inside the dataset's folders, someone else's file
        claim_output_file(out, TOOL, "--out", is_class_labels_file,
                          Layout(args.root, {"scribble": args.scribble}).input_folders())
        labels, no_fg = collect_class_labels(args.root, args.split, {"scribble": args.scribble},
                                             progress=True)
        write_class_labels(labels, out)
    except (DatasetError, OutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary(labels, meta.classes))
    if no_fg:
        print(f"warning: {len(no_fg)} id(s) with no foreground stroke (written with an empty list):",
              file=sys.stderr)
        for id_ in no_fg:
            print(f"  {id_}", file=sys.stderr)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
