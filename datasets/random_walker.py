"""Pseudo-labels from scribbles alone by the random walker (Grady 2006), the scribble-propagation
baseline of the medical scribble literature, with WSL4MIS's settings (SPEC §10) as defaults.

    python -m datasets.random_walker --root dataset/ACDC [--out random_walker] [--split train]
                                     [--beta 100] [--mode bf] [--sigma 0.35] [--workers N]

For every id of the split: the image (grey: one channel; colour: all three) as 0..1, rescaled
from (-sigma, 1 + sigma) to (-1, 1) (skimage rescale_intensity, WSL4MIS's), the scribble's
classes as seeds, skimage.segmentation.random_walker(beta, mode) -> one class per pixel, written
to <root>/<out>/<id>.png (palette PNG, the dataset's colours). Any number of classes.

A slice whose scribble lacks a class (--missing):
    walk    (default) the walker runs with the classes the scribble has; the others cannot
            appear (the annotators scribble every structure a slice shows, so a missing one is
            taken as absent). One class only: the whole slice is that class.
    ignore  no pseudo-label where a foreground class is missing: the slice is 255 (ignored by
            the losses) -- trust only fully scribbled slices.
    zero    WSL4MIS's rule: an all-background label when a foreground class is missing.
A slice with no scribble pixel is 255 everywhere (nothing to propagate).

Multiprocess (utils.parallel), resumable (existing outputs are kept unless --overwrite), every
file written atomically into a folder this tool owns (utils.outputs), never into an input
folder. At the end the labels are scored against the masks (datasets.score_labels) when the
split has them.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys

import numpy as np
from tqdm import tqdm

from datasets.layout import IGNORE_INDEX, DatasetError, Layout, check_label_values, read_ids, split_path
from utils.io import OutputError, read_image, read_label, report_failures, save_png
from utils.outputs import claim_output_dir
from utils.parallel import parallel_map

TOOL = "random_walker"
MISSING = ("walk", "ignore", "zero")
# WSL4MIS's acdc_pseudo_label_random_walker.py
BETA, MODE, SIGMA = 100.0, "bf", 0.35


def walker_input(image: np.ndarray) -> tuple[np.ndarray, int | None]:
    """(data, channel_axis) from an (H, W) or (H, W, 3) uint8 image: 0..1 float, one channel
    when the three are equal (a grey image stored as RGB)."""
    x = np.asarray(image, np.float64) / 255.0
    if x.ndim == 3 and np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 0], x[..., 2]):
        x = x[..., 0]
    return x, (-1 if x.ndim == 3 else None)


def random_walker_label(image: np.ndarray, scribble: np.ndarray, num_classes: int, beta: float = BETA,
                        mode: str = MODE, sigma: float = SIGMA, missing: str = "walk",
                        background: int | None = 0) -> np.ndarray:
    """The pseudo-label (uint8 H x W, 0..C-1, or 255 where none) of one image from its scribble
    (0..C-1, 255 unlabelled); `image` 0..1 (H, W) or (H, W, 3). See the module docstring."""
    from skimage.exposure import rescale_intensity
    from skimage.segmentation import random_walker
    if missing not in MISSING:
        raise ValueError(f"missing must be one of {MISSING}, got {missing!r}")
    scribble = np.asarray(scribble)
    present = [int(c) for c in np.unique(scribble) if c != IGNORE_INDEX]
    if not present:
        return np.full(scribble.shape, IGNORE_INDEX, np.uint8)
    foreground = [c for c in range(num_classes) if c != background]
    if missing != "walk" and any(c not in present for c in foreground):
        return np.full(scribble.shape, 0 if missing == "zero" else IGNORE_INDEX, np.uint8)
    if len(present) == 1:
        return np.full(scribble.shape, present[0], np.uint8)
    # Seeds numbered 1..k in class order (skimage's output for non-consecutive seed values is
    # not the seed values), 0 = unlabelled: WSL4MIS's markers when every class is present.
    lut = np.zeros(256, np.int32)
    lut[present] = np.arange(1, len(present) + 1)
    markers = lut[scribble.astype(np.uint8)]
    data = np.asarray(image, np.float64)
    data = rescale_intensity(data, in_range=(-sigma, 1 + sigma), out_range=(-1, 1))
    seg = random_walker(data, markers, beta=beta, mode=mode, channel_axis=-1 if data.ndim == 3 else None)
    return np.asarray(present, np.uint8)[seg - 1]


def _one(id_: str, layout: Layout, out: str, num_classes: int, palette, kw: dict) -> str | None:
    """Label one id; an error message naming the file, or None."""
    try:
        image = read_image(layout.path("image", id_))
        scribble_path = layout.path("scribble", id_)
        scribble = read_label(scribble_path)
        check_label_values(scribble, num_classes, scribble_path, "scribble")
        if scribble.shape != image.shape[:2]:
            raise DatasetError(f"{scribble_path}: size {scribble.shape[1]}x{scribble.shape[0]} differs from "
                               f"its image ({image.shape[1]}x{image.shape[0]}, WxH)")
        data, _ = walker_input(image)
        save_png(random_walker_label(data, scribble, num_classes, **kw), os.path.join(out, id_ + ".png"),
                 palette=palette)
    except (OSError, DatasetError) as e:
        return str(e)
    return None


def label_folder(root: str, out: str = TOOL, split: str = "train", scribble: str | None = None,
                 workers: int | None = None, overwrite: bool = False, progress: bool = True,
                 **kw) -> tuple[str, list[str]]:
    """Random-walker pseudo-labels of every id of `split` into the dataset's folder <root>/<out>.
    Returns (the folder, one message per id that failed). OutputError before any work if the folder is not this tool's
    or is an input folder."""
    layout = Layout(root, {"scribble": scribble})
    meta = layout.meta
    folder = os.path.join(root, out)
    ids = list(dict.fromkeys(read_ids(split_path(root, split))))
    outdir = claim_output_dir(folder, TOOL, "--out",
                              inputs=[layout.folder("image"), layout.folder("scribble"), layout.folder("mask")])
    names = [i + ".png" for i in ids]
    outdir.claim(names)
    todo = ids if overwrite else [i for i in ids if not os.path.exists(outdir.path(i + ".png"))]
    job = functools.partial(_one, layout=layout, out=folder, num_classes=meta.num_classes,
                            palette=meta.palette_array(), kw={**kw, "background": meta.background})
    failures = []
    with tqdm(total=len(todo), desc="random walker", unit="img", disable=not (progress and todo)) as bar:
        bar.set_postfix(skipped=len(ids) - len(todo))
        for err in parallel_map(job, todo, workers or os.cpu_count() or 1, ordered=False,
                                preload=["datasets.random_walker"]):
            if err is not None:
                failures.append(err)
                tqdm.write(f"error: {err}", file=sys.stderr)
            bar.update()
    return folder, sorted(failures)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m datasets.random_walker", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--root", required=True, help="dataset root")
    ap.add_argument("--out", default=TOOL, help=f"pseudo-label folder name under the root (default {TOOL})")
    ap.add_argument("--split", default="train", help="train, val, or an id-list .txt path")
    ap.add_argument("--scribble_path", default=None, help="scribble folder under the root (default pascal_2012_scribble)")
    ap.add_argument("--beta", type=float, default=BETA, help=f"edge weight sharpness (WSL4MIS: {BETA:g})")
    ap.add_argument("--mode", default=MODE, choices=("bf", "cg", "cg_j", "cg_mg"),
                    help=f"skimage solver (WSL4MIS: {MODE})")
    ap.add_argument("--sigma", type=float, default=SIGMA,
                    help=f"intensities rescaled from (-sigma, 1 + sigma) to (-1, 1) (WSL4MIS: {SIGMA})")
    ap.add_argument("--missing", default="walk", choices=MISSING,
                    help="a slice whose scribble lacks a foreground class: walk with the classes it has "
                         "(default), ignore the slice (255), or zero (WSL4MIS: all background)")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    ap.add_argument("--overwrite", action="store_true", help="recompute existing outputs")
    args = ap.parse_args(argv)
    if os.path.basename(os.path.normpath(args.out)) != os.path.normpath(args.out):
        ap.error(f"--out {args.out}: a folder name under --root, not a path")
    try:
        folder, failures = label_folder(args.root, args.out, args.split, args.scribble_path, args.workers,
                                        args.overwrite, beta=args.beta, mode=args.mode, sigma=args.sigma,
                                        missing=args.missing)
    except (DatasetError, OutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if report_failures(failures, "image(s) could not be labelled"):
        return 1
    print(f"pseudo-labels in {folder}/")
    layout = Layout(args.root)
    if os.path.isdir(layout.folder("mask")):
        from datasets import score_labels
        return score_labels.main(["--root", args.root, "--labels", args.out, "--split", args.split])
    return 0


if __name__ == "__main__":
    sys.exit(main())
