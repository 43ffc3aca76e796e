"""Throughput of the training input pipeline (SPEC §6): images/s through a DataLoader with one
worker, crop 465, all five training fields (image, scribble, pseudo, dist_s, dist_c).

    python bench/loader.py [--root DIR] [--pseudo FOLDER] [--n N] [--batch B] [--repeat R]

Without --root, a temporary ScribbleSup-sized set (500x375 JPEGs + label/map PNGs) is written
first. Two baselines run in the same process on the same files:
- read only: the dataset without a transform (JPEG + 4 PNG decodes): the ceiling;
- sequential: the same augmentation done op by op on whole images, as the authors' pipeline
  did (resize, rotate, blur, flip, pad, crop: up to a 2x-upscaled frame per field).
The ratios printed are TrainTransform's images/s over each baseline's.

The JPEG decode (utils.io.read_image: OpenCV) is also measured against the previous path,
Pillow (read_image_pillow), both alone and inside the whole loader (the dataset's decode
swapped for the run), after checking that both give the same pixels on every image.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time

import cv2
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets.layout import (DEFAULT_FOLDERS, LABEL_FIELDS, MAP_FIELDS,  # noqa: E402
                             PSEUDO_SYNTHETIC, SPLIT_DIR)
from datasets.scribble import TRAIN_FIELDS, ScribbleDataset  # noqa: E402
from datasets.transforms import TrainTransform, _to_tensors  # noqa: E402
import datasets.scribble  # noqa: E402
from utils.io import read_image, read_image_pillow, save_png  # noqa: E402
from utils.parallel import data_loader  # noqa: E402


# ---------------------------------------------------------------- a ScribbleSup-sized set
def write_set(root: str, n: int, size=(375, 500), seed: int = 0) -> None:
    """n random JPEGs with smooth content (realistic JPEG sizes) + scribble/pseudo/map PNGs."""
    rng = np.random.default_rng(seed)
    h, w = size
    folders = {**DEFAULT_FOLDERS, "pseudo": PSEUDO_SYNTHETIC}
    ids = [f"bench_{i:05d}" for i in range(n)]
    for id_ in tqdm(ids, desc="writing bench set", leave=False):
        coarse = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        image = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
        pseudo = cv2.resize(rng.integers(0, 21, (6, 8), dtype=np.uint8), (w, h),
                            interpolation=cv2.INTER_NEAREST)
        scribble = np.full((h, w), 255, np.uint8)
        for _ in range(4):
            pts = rng.integers(0, [w, h], (5, 2)).astype(np.int32)
            cv2.polylines(scribble, [pts], False, int(rng.integers(0, 21)), 3)
        edt = cv2.distanceTransform((scribble == 255).astype(np.uint8), cv2.DIST_L2, 5)
        dist_s = (255 - np.clip(edt * 1.65, 0, 255)).astype(np.uint8)
        edges = cv2.Canny(pseudo * 10, 1, 1)
        edt = cv2.distanceTransform((edges == 0).astype(np.uint8), cv2.DIST_L2, 5)
        dist_c = np.clip(edt * 20.1, 0, 255).astype(np.uint8)
        arrays = {"scribble": scribble, "pseudo": pseudo, "dist_s": dist_s, "dist_c": dist_c}
        path = os.path.join(root, folders["image"], id_ + ".jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(image).save(path, quality=90)
        for f, a in arrays.items():
            save_png(a, os.path.join(root, folders[f], id_ + ".png"))
    os.makedirs(os.path.join(root, SPLIT_DIR), exist_ok=True)
    with open(os.path.join(root, SPLIT_DIR, "train.txt"), "w") as f:
        f.write("\n".join(ids) + "\n")


# ---------------------------------------------------------------- the op-by-op baseline
class SequentialTransform(TrainTransform):
    """The same augmentation, one whole-image op after another (the usual implementation)."""

    def __call__(self, sample, rng=None):
        rng = rng if rng is not None else self._generator()
        out = dict(sample)
        fields = [k for k in sample if k == "image" or k in LABEL_FIELDS or k in MAP_FIELDS]
        pad = {k: tuple(map(float, self.mean255)) if k == "image" else
               (255 if k in LABEL_FIELDS else 0) for k in fields}
        for k in fields:
            out[k] = out[k].astype(np.float32) if k == "image" else out[k]
        h, w = sample["image"].shape[:2]
        s = rng.uniform(*self.scale_range)
        fw, fh = max(1, round(w * s)), max(1, round(h * s))
        for k in fields:
            out[k] = cv2.resize(out[k], (fw, fh), interpolation=cv2.INTER_LINEAR if k == "image"
                                else cv2.INTER_NEAREST)
        if rng.random() < self.p_rotate:
            m = cv2.getRotationMatrix2D(((fw - 1) / 2, (fh - 1) / 2),
                                        rng.uniform(-self.max_rotation, self.max_rotation), 1)
            for k in fields:
                out[k] = cv2.warpAffine(out[k], m, (fw, fh), flags=cv2.INTER_LINEAR if k == "image"
                                        else cv2.INTER_NEAREST, borderValue=pad[k])
        if rng.random() < self.p_blur:
            out["image"] = cv2.GaussianBlur(out["image"], (self.blur_kernel,) * 2, 0)
        if rng.random() < self.p_flip:
            for k in fields:
                out[k] = cv2.flip(out[k], 1)
        cs = self.crop_size
        ph, pw = max(cs - fh, 0), max(cs - fw, 0)
        for k in fields:
            out[k] = cv2.copyMakeBorder(out[k], 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=pad[k])
        y0 = int(rng.integers(0, fh + ph - cs, endpoint=True))
        x0 = int(rng.integers(0, fw + pw - cs, endpoint=True))
        for k in fields:
            out[k] = out[k][y0:y0 + cs, x0:x0 + cs]
        return _to_tensors(out, self.mean255, self.std255)


# ---------------------------------------------------------------- measurement
def _as_list(batch):
    return batch


@contextlib.contextmanager
def decoded_by(read):
    """The dataset decodes images with `read` meanwhile (the loader's workers fork from here)."""
    before = datasets.scribble.read_image
    datasets.scribble.read_image = read
    try:
        yield
    finally:
        datasets.scribble.read_image = before


def decode_ms(paths: list[str], read, repeat: int) -> float:
    """Best-of-`repeat` mean milliseconds per image of `read` over `paths`."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for path in paths:
            read(path)
        best = min(best, (time.perf_counter() - start) / len(paths) * 1e3)
    return best


def images_per_second(dataset, n: int, batch: int, name: str, collate=None) -> float:
    """Images/s over n images, one worker, timed from the first batch (worker start-up excluded)."""
    torch.manual_seed(0)
    loader = data_loader(dataset, batch_size=batch, shuffle=True, num_workers=1,
                         collate_fn=collate, drop_last=True)
    it = iter(loader)
    next(it)
    start, seen = time.perf_counter(), 0
    for _ in tqdm(range(max(1, n // batch - 1)), desc=name, leave=False):
        next(it)
        seen += batch
    return seen / (time.perf_counter() - start)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", help="a ScribbleSup-layout root (default: a generated temporary set)")
    p.add_argument("--pseudo", default=PSEUDO_SYNTHETIC, help="pseudo-label folder under --root")
    p.add_argument("--n", type=int, default=160, help="images timed per pipeline")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeat", type=int, default=2, help="runs per pipeline; the best counts")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cdsp_bench_") as tmp:
        root = args.root
        if root is None:
            root = tmp
            write_set(root, args.n + args.batch)
        make = lambda t: ScribbleDataset(root, "train", TRAIN_FIELDS,  # noqa: E731
                                         folders={"pseudo": args.pseudo}, transform=t)
        n = min(args.n, len(make(None)) - args.batch)
        ds = make(None)
        paths = [ds.layout.path("image", id_) for id_ in ds.ids[:n]]
        same = all(np.array_equal(read_image(p), read_image_pillow(p)) for p in paths)
        ms = {"opencv": decode_ms(paths, read_image, 3 * args.repeat),
              "pillow": decode_ms(paths, read_image_pillow, 3 * args.repeat)}
        pipelines = {"read": (make(None), _as_list, read_image),
                     "sequential": (make(SequentialTransform(465)), None, read_image),
                     "ours": (make(TrainTransform(465)), None, read_image),
                     "ours, Pillow decode": (make(TrainTransform(465)), None, read_image_pillow)}
        best = dict.fromkeys(pipelines, 0.0)
        for _ in range(args.repeat):  # interleaved, best of: the machine may be shared
            for name, (ds, collate, read) in pipelines.items():
                with decoded_by(read):
                    best[name] = max(best[name], images_per_second(ds, n, args.batch, name, collate))
        read, seq, ours, ours_pil = (best[k] for k in ("read", "sequential", "ours", "ours, Pillow decode"))
    print(f"training pipeline, 1 worker, crop 465, fields {', '.join(TRAIN_FIELDS)}, "
          f"{n} images, batch {args.batch}, best of {args.repeat}")
    print(f"  read only (no transform)   {read:7.1f} images/s")
    print(f"  sequential ops (baseline)  {seq:7.1f} images/s")
    print(f"  TrainTransform             {ours:7.1f} images/s")
    print(f"  TrainTransform, Pillow decode (previous path) {ours_pil:7.1f} images/s")
    print(f"  ratio TrainTransform / sequential: {ours / seq:.2f}x; "
          f"/ read only: {ours / read:.2f}; / Pillow decode: {ours / ours_pil:.2f}x")
    print(f"JPEG decode alone ({n} images, best of {3 * args.repeat}): OpenCV {ms['opencv']:.2f} ms, "
          f"Pillow {ms['pillow']:.2f} ms per image: {ms['pillow'] / ms['opencv']:.2f}x; "
          f"same pixels on every image: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
