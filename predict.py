"""Predict on your own images with a CDSP checkpoint: any image Pillow reads, any size, no masks.

    python predict.py --checkpoint_path log/train_r50_deeplabv2/best_checkpoint.pth \\
                      --images photos/ extra.jpg --out predictions --overlay

The same multi-scale sliding-window inference as eval.py (its `predict_label`, imported: memory
does not grow with the image beyond the image and its label; the same flags and defaults:
--scales --base_size --crop_size --stride_rate --flip --crop_batch --device --amp, and the
architecture flags). Running out of memory is one line naming the image and the settings to
lower. Inputs are files and/or folders (a folder: its .jpg .jpeg .png .bmp .tif .tiff files,
sorted, not recursive, dot-files skipped). Grey (8- or 16-bit), RGBA, palette and CMYK images
are converted to RGB and the EXIF orientation is applied, so every output has the size of the
image as displayed.

Writes <out>/<stem>.png, the argmax as a palette PNG in the checkpoint's colours (its
dataset_meta; VOC's for a checkpoint without one), and with --overlay
<out>/overlay/<stem>.png: image | prediction over the image, above a legend of the classes
present. An image that cannot be read is named and skipped; the exit is 1 at the end if any
was. Two inputs with the same stem are refused before any work, and so is an --out that breaks
the ownership rule (docs/outputs.md): an input folder (or a folder inside one, or holding an
input image), a folder predict.py did not make (a dataset's masks), a file it did not write.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps
from tqdm import tqdm

import eval as evaluation
from datasets.meta import VOC_META, DatasetMeta
from utils import dist
from utils.checkpoint import CheckpointError
from utils.cli import is_out_of_memory, naming_out_of_memory, run_main
from utils.io import save_png, save_rgb_png
from utils.outputs import claim_output_dir

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
# eval.py's flags that predict.py shares, with eval.py's names, defaults, types and help.
INFERENCE_FLAGS = ("model_type", "layers", "numclasses", "scales", "base_size", "crop_size",
                   "stride_rate", "flip", "crop_batch", "device", "amp", "trust_checkpoint")


PREDICT_TOOL = "predict.py"  # the owner of --out folders (utils.outputs' mark)


class UnreadableImages(Exception):
    """Some inputs could not be read (each already named); the others were predicted."""


# ----------------------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    # eval.py has no function that adds only its inference flags, so its parser's own actions
    # are registered here (argparse's _add_action): one definition, the scripts cannot drift
    # apart. Re-declaring them from their attributes would turn --amp/--no-amp into --no-no-amp.
    shared = {a.dest: a for a in evaluation.build_parser()._actions}
    p._add_action(shared["checkpoint_path"])
    p.add_argument("--images", nargs="+", required=True, metavar="DIR|FILE",
                   help=f"image files and/or folders (a folder's {' '.join(IMAGE_EXTENSIONS)} files)")
    p.add_argument("--out", required=True, help="predictions go to OUT/<stem>.png")
    for dest in INFERENCE_FLAGS:
        p._add_action(shared[dest])
    p.add_argument("--overlay", action="store_true",
                   help="also write OUT/overlay/<stem>.png: image | prediction over it, with a legend")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    evaluation.check_inference_flags(p, args)  # the same checks as eval.py's
    args.out = os.path.normpath(args.out)
    return args


# ----------------------------------------------------------------------------- inputs
def collect_images(inputs) -> dict[str, str]:
    """{stem: path} in order, from files and folders; ValueError for a missing input, a folder
    without images, or two files with the same stem (their outputs would collide)."""
    paths, seen = [], set()
    for given in inputs:
        if os.path.isdir(given):
            try:
                names = sorted(os.listdir(given))
            except OSError as e:
                raise ValueError(f"--images {given}: cannot list the folder ({e.strerror or e})") from None
            found = [os.path.join(given, n) for n in names
                     if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")
                     and os.path.isfile(os.path.join(given, n))]
            if not found:
                raise ValueError(f"--images {given}: no {' '.join(IMAGE_EXTENSIONS)} files in this folder")
        elif os.path.isfile(given):
            found = [given]
        else:
            raise ValueError(f"--images {given}: no such file or folder")
        for path in found:  # the same file given twice (a folder and its file) counts once
            real = os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                paths.append(path)
    by_stem: dict[str, str] = {}
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in by_stem:
            raise ValueError(f"--images: {by_stem[stem]} and {path} would both be written as {stem}.png; "
                             f"rename one or predict them in separate runs")
        by_stem[stem] = path
    return by_stem


def claim_outputs(args, images: dict[str, str], create: bool) -> dict[str, tuple[str, str | None]]:
    """{stem: (prediction path, overlay path or None)} under the ownership rule (utils.outputs):
    --out is predict.py's folder, never an input folder (nor inside one, nor holding an input
    image), never one holding files predict.py did not write (a dataset's mask folder); an
    existing <stem>.png is replaced only if predict.py wrote it. `create=False` only checks
    (before any work: nothing is made)."""
    out = claim_output_dir(args.out, PREDICT_TOOL, "--out", args.images, create=create)
    names = {stem: (f"{stem}.png", f"overlay/{stem}.png" if args.overlay else None) for stem in images}
    (out.claim if create else out.check)([n for pair in names.values() for n in pair if n])
    return {stem: (out.path(pred), over and out.path(over)) for stem, (pred, over) in names.items()}


def read_rgb(path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB as displayed (EXIF orientation applied); OSError naming the file."""
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I", "F") or img.mode.startswith("I;16"):  # convert() would clip at 255
                a = np.asarray(img, np.float64)
                a = a / 257 if a.max() > 255 else a  # 16-bit samples: 65535 -> 255
                img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
            return np.asarray(img.convert("RGB"))
    except Exception as e:  # Pillow raises many kinds for broken files
        if is_out_of_memory(e):  # a readable file, too large for this machine
            raise
        reason = str(e).replace(f" {path!r}", "").replace(path, "the file")  # the path once per line
        raise OSError(f"{path}: cannot read ({e.__class__.__name__}: {reason})") from None


# ----------------------------------------------------------------------------- model, palette
def class_meta(checkpoint_path: str, info: dict) -> DatasetMeta:
    """The classes and colours of a checkpoint's predictions: its dataset_meta (checked against
    the model by eval.load_model_from_checkpoint), else the VOC palette (VOC's names for 21
    classes, class numbers otherwise)."""
    if info["dataset_meta"] is not None:
        return info["dataset_meta"]
    n = int(info["arch"]["numclasses"])
    if n == VOC_META.num_classes:
        return VOC_META
    # from_dict gives VOC's colours; more classes than a palette PNG holds fail here
    return DatasetMeta.from_dict({"classes": [str(i) for i in range(n)]},
                                 f"{checkpoint_path} (no dataset_meta: VOC palette)")


# ----------------------------------------------------------------------------- outputs
def legend(meta: DatasetMeta, classes, width: int, row: int = 14) -> np.ndarray:
    """A white strip `width` wide: a swatch and the name of each class, wrapped into rows."""
    font = ImageFont.load_default()
    spots, x, y = [], 4, 2
    for c in classes:
        step = 14 + math.ceil(font.getlength(meta.classes[c])) + 10
        if x > 4 and x + step > width:
            x, y = 4, y + row
        spots.append((x, y, c))
        x += step
    strip = Image.new("RGB", (width, y + row + 2), "white")
    draw = ImageDraw.Draw(strip)
    for x, y, c in spots:
        draw.rectangle([x, y + 2, x + 9, y + 11], fill=tuple(meta.palette[c]), outline=(0, 0, 0))
        draw.text((x + 14, y), meta.classes[c], fill=(0, 0, 0), font=font)
    return np.asarray(strip)


def overlay_picture(image: np.ndarray, label: np.ndarray, meta: DatasetMeta, alpha: float = 0.6) -> np.ndarray:
    """image | prediction over the image (4 px white gap), above the legend of the classes present."""
    colour = meta.colorize(label).astype(np.float32)
    blend = np.clip(np.rint((1 - alpha) * image.astype(np.float32) + alpha * colour), 0, 255).astype(np.uint8)
    top = np.concatenate([image, np.full((image.shape[0], 4, 3), 255, np.uint8), blend], axis=1)
    return np.concatenate([top, legend(meta, [int(c) for c in np.unique(label)], top.shape[1])], axis=0)


# ----------------------------------------------------------------------------- prediction
def run(args) -> int:
    images = collect_images(args.images)
    claim_outputs(args, images, create=False)  # refusals before any work
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("predict.py runs in one process: start it with python, not torchrun")
    try:
        device = dist.init_distributed(args.device)  # eval.py's --device rules (no process group)
    except RuntimeError as e:
        raise ValueError(str(e)) from None
    amp = (device.type == "cuda") if args.amp is None else args.amp
    model, info = evaluation.load_model_from_checkpoint(args.checkpoint_path, args.model_type, args.layers,
                                                        args.numclasses, device, args.trust_checkpoint)
    meta = class_meta(args.checkpoint_path, info)
    palette = meta.palette_array()
    sizes = evaluation.resolve_sizes(args, info)  # eval.py's defaults: the checkpoint's training sizes
    arch = ", ".join(f"{k}={v} ({info['source'][k]})" for k, v in info["arch"].items())
    print(f"model: {arch}; epoch {info['epoch']}" + (f"; {sizes}" if sizes else ""))
    print(f"classes ({meta.source}): {', '.join(meta.classes)}")
    outputs = claim_outputs(args, images, create=True)

    failed = []
    bar = tqdm(images.items(), desc="predict", unit="image", dynamic_ncols=True)
    try:
        for stem, path in bar:
            with naming_out_of_memory(path):
                try:
                    image = read_rgb(path)
                except OSError as e:
                    failed.append(str(e))
                    bar.set_postfix(unreadable=len(failed))
                    continue
                label = evaluation.predict_label(model, image, args.scales, args.base_size, args.crop_size,
                                                 args.stride_rate, args.flip, args.crop_batch, amp,
                                                 meta.mean, meta.std)
                label = label.to("cpu", torch.uint8).numpy()
                pred_path, overlay_path = outputs[stem]
                save_png(label, pred_path, palette=palette)
                if overlay_path:
                    save_rgb_png(overlay_picture(image, label, meta), overlay_path)
    finally:  # also when stopped early: the unreadable files met so far are named
        bar.close()
        for message in failed:
            print(f"error: {message}", file=sys.stderr)
    done = len(images) - len(failed)
    if failed:
        raise UnreadableImages(f"{len(failed)} of {len(images)} image(s) could not be read (named above); "
                               f"{done} prediction(s) in {args.out}/")
    print(f"{done} prediction(s) in {args.out}/")
    return done


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_main(lambda: run(args),
                    (UnreadableImages, CheckpointError, FileNotFoundError, ValueError),
                    f"the predictions written so far are in {args.out}/", memory_hint=evaluation.MEMORY_HINT)


if __name__ == "__main__":
    sys.exit(main())
