"""ScribbleSup XML (or labelme JSON) scribbles -> PNG label maps (SPEC §1).

    python -m datasets.convert_scribbles --xml scribble_annotation/pascal_2012 \\
        --images VOC2012/JPEGImages --out VOC2012/pascal_2012_scribble
    python -m datasets.convert_scribbles --labelme my_scribbles --out DATA/pascal_2012_scribble \\
        [--root DATA] [--images DATA/JPEGImages]

The labelme path (datasets/labelme.py) draws the same 3-px strokes (both draw with
datasets.strokes.draw_strokes); this docstring describes the XML files.

One XML per image (`<id>.xml`, the id is taken from the file name):

    <annotation>
      <filename>2007_000032.jpg</filename>
      <size><width>500</width><height>281</height></size>
      <polygon>
        <tag>plane</tag>
        <point><X>105</X><Y>110</Y></point> <point>...</point> ...
      </polygon>
      ...
    </annotation>

Canvas of the image size filled with 255 (unlabelled); each <polygon>, in file order, is an
open polyline through its points (1-based, shifted to 0-based and clamped to the image),
3 px wide, drawn with the class index of its <tag> (background strokes as 0; later strokes
overwrite earlier ones). Tags are the short ScribbleSup names (layout.SCRIBBLE_TAGS); the
long VOC names (layout.CLASSES) are accepted too.

Bad files (malformed XML, unknown tag, a coordinate that is not a finite number, <size>
disagreeing with the JPEG or beyond Pillow's decompression-bomb limit, missing JPEG) are
collected, not fatal: every good file is still written (atomically), the bad ones are not,
all problems are listed at the end and the CLI exits 1, so one run shows every problem.
--out is this tool's own folder (docs/outputs.md): never the XML, labelme or image folder, nor
a folder it did not make.
Converted files that clamp points or mark no pixel are listed in the summary as notes.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import xml.etree.ElementTree as ET

import numpy as np
from tqdm import tqdm

from datasets.labelme import convert_labelme
from datasets.layout import CLASSES, SCRIBBLE_TAGS, DatasetError
from datasets.strokes import FAR, TOOL, UNLABELLED, ConvertStats, check_canvas, draw_strokes
from utils.io import image_size as read_image_size
from utils.io import OutputError, save_png
from utils.outputs import claim_output_dir
from utils.parallel import parallel_map

CLASS_OF_TAG = {**{n: i for i, n in enumerate(CLASSES)}, **{n: i for i, n in enumerate(SCRIBBLE_TAGS)}}


def _text(elem: ET.Element, tag: str, where: str) -> str:
    child = elem.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise ValueError(f"{where} has no <{tag}>")
    return child.text.strip()


def _number(elem: ET.Element, tag: str, where: str) -> int:
    """The nearest integer; ValueError unless the text is a finite number (inf, nan, 'x').
    Coordinates far off the image are clamped anyway: kept within +-FAR so int64 holds them."""
    text = _text(elem, tag, where)
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: <{tag}> is not a number: '{text}'") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: <{tag}> is not a finite number: '{text}'")
    return int(round(min(max(value, -FAR), FAR)))


def rasterize_scribble_xml(xml_path: str, image_size: tuple[int, int] | None = None,
                           notes: list[str] | None = None) -> np.ndarray:
    """(H, W) uint8 scribble label map of one XML file.

    `image_size` (H, W) is the real image's size; the XML's <size> must agree with it. Without
    it, the XML's <size> sets the canvas. Raises DatasetError naming the file on any problem.
    What is drawn but worth a look is appended to `notes` (each naming the file): points
    outside the image (clamped to its border), a file that marks no pixel at all.
    """
    try:
        root = ET.parse(xml_path).getroot()
    except FileNotFoundError:
        raise DatasetError(f"{xml_path}: file not found") from None
    except (ET.ParseError, OSError) as e:
        raise DatasetError(f"{xml_path}: malformed XML ({e})") from None
    try:
        size = root.find("size")
        xml_hw = None
        if size is not None:
            xml_hw = (_number(size, "height", "<size>"), _number(size, "width", "<size>"))
        if image_size is None and xml_hw is None:
            raise ValueError("no <size> and no image size given")
        h, w = tuple(image_size) if image_size is not None else xml_hw
        if xml_hw is not None and xml_hw != (h, w):
            raise ValueError(f"<size> is {xml_hw[1]}x{xml_hw[0]} (WxH) but the image is {w}x{h}")
        check_canvas(h, w)

        strokes = []
        for k, poly in enumerate(root.iter("polygon"), 1):
            where = f"stroke {k}"
            tag = _text(poly, "tag", where)
            cls = CLASS_OF_TAG.get(tag.lower())
            if cls is None:
                raise ValueError(f"{where}: unknown tag '{tag}' (known: {', '.join(SCRIBBLE_TAGS)})")
            pts = [(_number(p, "X", f"{where} point {j}") - 1, _number(p, "Y", f"{where} point {j}") - 1)
                   for j, p in enumerate(poly.iter("point"), 1)]
            strokes.append((cls, pts, False))
    except ValueError as e:
        raise DatasetError(f"{xml_path}: {e}") from None
    canvas = draw_strokes(strokes, (h, w), notes, xml_path)
    if notes is not None and not any(pts for _, pts, _ in strokes):
        notes.append(f"{xml_path}: no <polygon> with points: the scribble marks no pixel (all 255)")
    return canvas


def _convert_one(args: tuple[str, str, str]) -> tuple[int, int, str | None, list[str]]:
    """(labelled, total, problem, notes) for one XML; the PNG is written only if the file is good."""
    xml_path, jpg_path, png_path = args
    notes: list[str] = []
    try:
        try:
            hw = read_image_size(jpg_path)
        except FileNotFoundError:
            raise DatasetError(f"{xml_path}: image {jpg_path} not found") from None
        except OSError as e:
            raise DatasetError(f"{xml_path}: {e}") from None
        label = rasterize_scribble_xml(xml_path, hw, notes)
        save_png(label, png_path)
    except (DatasetError, OSError) as e:
        return 0, 0, str(e), []
    return int((label != UNLABELLED).sum()), label.size, None, notes


def convert(xml_dir: str, images_dir: str, out_dir: str, workers: int | None = None) -> ConvertStats:
    """Rasterise every xml_dir/<id>.xml to out_dir/<id>.png using JPEGImages/<id>.jpg's size."""
    if not os.path.isdir(xml_dir):
        raise DatasetError(f"{xml_dir}: XML folder not found")
    if not os.path.isdir(images_dir):
        raise DatasetError(f"{images_dir}: image folder not found")
    names = sorted(n for n in os.listdir(xml_dir) if n.lower().endswith(".xml"))
    if not names:
        raise DatasetError(f"{xml_dir}: no .xml files")
    out = claim_output_dir(out_dir, TOOL, "--out", inputs=[xml_dir, images_dir])
    out.claim([n[:-4] + ".png" for n in names])
    jobs = [(os.path.join(xml_dir, n), os.path.join(images_dir, n[:-4] + ".jpg"),
             out.path(n[:-4] + ".png")) for n in names]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))

    stats = ConvertStats()
    results = parallel_map(_convert_one, jobs, workers, preload=["datasets.convert_scribbles"])
    for labelled, total, problem, notes in tqdm(results, total=len(jobs), desc="scribbles", unit="xml"):
        stats.notes += notes
        if problem:
            stats.problems.append(problem)
        else:
            stats.converted += 1
            stats.labelled_pixels += labelled
            stats.total_pixels += total
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m datasets.convert_scribbles",
                                 description="ScribbleSup XML or labelme JSON scribbles -> PNG label maps (SPEC §1)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--xml", help="folder of <id>.xml (scribble_annotation/pascal_2012)")
    src.add_argument("--labelme", help="folder of labelme <id>.json (linestrip/line/polygon/point shapes)")
    ap.add_argument("--images", help="image folder (sizes are read from it); required with --xml "
                                     "(<id>.jpg); with --labelme: <id>.* in it instead of the JSON's imagePath")
    ap.add_argument("--root", help="--labelme: dataset root whose dataset.yaml names the classes "
                                   "(default: the VOC names and ScribbleSup tags)")
    ap.add_argument("--out", required=True, help="output folder of <id>.png (pascal_2012_scribble)")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    args = ap.parse_args(argv)
    if args.xml is not None and args.images is None:
        ap.error("--images is required with --xml")
    if args.xml is not None and args.root is not None:
        ap.error("--root is for --labelme (the XML tags are the VOC classes)")
    try:
        if args.labelme is not None:
            stats = convert_labelme(args.labelme, args.out, root=args.root, images_dir=args.images,
                                    workers=args.workers)
        else:
            stats = convert(args.xml, args.images, args.out, args.workers)
    except (DatasetError, OutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(stats.summary(), file=sys.stderr if stats.problems else sys.stdout)
    return 1 if stats.problems else 0

if __name__ == "__main__":
    sys.exit(main())
