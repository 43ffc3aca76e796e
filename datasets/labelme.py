"""labelme JSON scribbles -> PNG label maps, drawn exactly as the ScribbleSup XML ones (SPEC §1).

    python -m datasets.convert_scribbles --labelme DIR --out DIR [--root DATASET] [--images DIR]

One labelme file per image (`<id>.json`; the output is `<out>/<id>.png`, the id taken from the
JSON's file name):

    {"shapes": [{"label": "cat", "points": [[10.0, 12.5], [40.2, 13.0]], "shape_type": "linestrip"},
                ...],
     "imagePath": "../JPEGImages/2007_000032.jpg", "imageHeight": 281, "imageWidth": 500,
     "imageData": null, ...}

Each shape, in file order, is one 3-px stroke drawn by strokes.draw_strokes (so the
pixels are those of the XML path: later strokes overwrite earlier ones, 255 elsewhere):
`linestrip` and `line` as an open polyline, `polygon` as its closed outline (the interior is
not filled: a scribble marks where the annotator drew), `point` as a dot. A shape without
`shape_type` is a polygon (as labelme reads old files). Other types (rectangle, circle,
mask, ...) are errors naming the file, the shape and the type: they mark an area, not a
stroke, so in a scribble set they are a mistake to fix, not something to guess at.

Coordinates are labelme's: 0-based floats with integers at pixel centres (labelme's own
masks are drawn that way), rounded half up to the nearest pixel; points outside the image are
clamped to its border and noted. So XML (X, Y), 1-based, is labelme (X - 1, Y - 1).

`label` is a class name of the dataset description (`--root`: its dataset.yaml, index =
label value; without one the VOC names, plus the ScribbleSup short tags as the XML path
accepts them), matched exactly, else case-insensitively (leading/trailing spaces ignored).
An unknown label is an error naming the file, the shape and the label.

The image: `<images>/<id>.*` with `--images` (if several, the one named by imagePath), else
the JSON's `imagePath`, relative to the JSON's folder. Its header gives the size, which
imageHeight / imageWidth must match. An image that is not found is a problem, as on the XML
path, unless the JSON embeds it (`imageData`): then the embedded image's size is used (from
its header only; a size beyond Pillow's decompression-bomb limit, ~89 M pixels, is a problem,
as is a shape_type that is not a name).

Problems are collected as on the XML path: every good file is written, all problems are
listed at the end and the CLI exits 1.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import math
import os
import warnings

import numpy as np
from PIL import Image
from tqdm import tqdm

from datasets.layout import SCRIBBLE_TAGS, DatasetError
from datasets.meta import VOC_CLASSES, VOC_META, DatasetMeta, MetaError, load_meta
from datasets.strokes import FAR, TOOL, UNLABELLED, ConvertStats, check_canvas, draw_strokes
from utils.io import image_size as read_image_size
from utils.io import save_png
from utils.outputs import claim_output_dir
from utils.parallel import parallel_map

# shape_type -> closed outline?
STROKE_SHAPES = {"linestrip": False, "line": False, "polygon": True, "point": False}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")
_AMBIGUOUS = -1


def label_classes(meta: DatasetMeta | None = None) -> tuple[dict[str, int], dict[str, int]]:
    """(exact name -> class index, case-folded name -> class index or _AMBIGUOUS when two
    names fold alike). VOC names also accept the ScribbleSup tags."""
    classes = (meta or VOC_META).classes
    names = list(enumerate(classes))
    if tuple(classes) == VOC_CLASSES:
        names += list(enumerate(SCRIBBLE_TAGS))
    exact = {name: i for i, name in names}
    folded: dict[str, int] = {}
    for i, name in names:
        key = name.strip().casefold()
        folded[key] = i if folded.get(key, i) == i else _AMBIGUOUS
    return exact, folded


def class_of_label(label: str, lookup: tuple[dict[str, int], dict[str, int]],
                   meta: DatasetMeta | None = None) -> int:
    """The class index of a labelme label (lookup: label_classes(meta)); ValueError naming the
    label otherwise."""
    meta = meta or VOC_META
    exact, folded = lookup
    cls = exact.get(label, folded.get(label.strip().casefold()))
    if cls is None:
        tags = " (or the ScribbleSup tags)" if tuple(meta.classes) == VOC_CLASSES else ""
        raise ValueError(f"unknown label '{label}' (classes of {meta.source}: {', '.join(meta.classes)}{tags})")
    if cls == _AMBIGUOUS:
        raise ValueError(f"label '{label}' matches several classes of {meta.source} when case is "
                         f"ignored; spell it exactly")
    return cls


def read_labelme(json_path: str) -> dict:
    """The parsed file; DatasetError naming it unless it is a labelme annotation."""
    try:
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"{json_path}: file not found") from None
    except (ValueError, OSError) as e:  # JSONDecodeError, UnicodeDecodeError are ValueErrors
        raise DatasetError(f"{json_path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise DatasetError(f"{json_path}: not a labelme file (no 'shapes' list)")
    return data


def _pixel(value, where: str) -> int:
    """A labelme coordinate (0-based, integers at pixel centres) -> the nearest pixel, half up."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where} is not a number: {value!r}")
    return int(math.floor(min(max(value, -FAR), FAR) + 0.5))


def _json_size(data: dict) -> tuple[int, int] | None:
    """(imageHeight, imageWidth), or None if the file gives neither."""
    h, w = data.get("imageHeight"), data.get("imageWidth")
    if h is None and w is None:
        return None
    for key, v in (("imageHeight", h), ("imageWidth", w)):
        if v is None:
            raise ValueError(f"has {'imageWidth' if key == 'imageHeight' else 'imageHeight'} but no {key}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or v <= 0:
            raise ValueError(f"{key} is not a positive integer: {v!r}")
    return int(h), int(w)


def labelme_strokes(data: dict, meta: DatasetMeta | None = None) -> list[tuple[int, list, bool]]:
    """draw_strokes' [(class, [(x, y) 0-based pixels], closed)], one per shape, in file order;
    ValueError naming the shape otherwise."""
    lookup = label_classes(meta)
    strokes = []
    for k, shape in enumerate(data["shapes"], 1):
        where = f"shape {k}"
        if not isinstance(shape, dict):
            raise ValueError(f"{where} is not an object")
        label = shape.get("label")
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"{where} has no label")
        kind = shape.get("shape_type") or "polygon"
        if not isinstance(kind, str):
            raise ValueError(f"{where} ('{label}'): shape_type {json.dumps(kind)[:60]} is not a name "
                             f"(use {', '.join(STROKE_SHAPES)})")
        if kind not in STROKE_SHAPES:
            raise ValueError(f"{where} ('{label}'): shape_type '{kind}' is not a scribble "
                             f"(use {', '.join(STROKE_SHAPES)}; a {kind} marks an area)")
        try:
            cls = class_of_label(label, lookup, meta)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        points = shape.get("points")
        if points is None:
            points = []
        if not isinstance(points, list):
            raise ValueError(f"{where}: 'points' is not a list")
        if kind == "point" and len(points) > 1:
            raise ValueError(f"{where}: a point shape has {len(points)} points")
        pts = []
        for j, p in enumerate(points, 1):
            if not isinstance(p, (list, tuple)) or len(p) != 2:
                raise ValueError(f"{where} point {j} is not [x, y]: {p!r}")
            pts.append((_pixel(p[0], f"{where} point {j} x"), _pixel(p[1], f"{where} point {j} y")))
        strokes.append((cls, pts, STROKE_SHAPES[kind]))
    return strokes


def rasterize_labelme(data: dict, json_path: str, image_size: tuple[int, int] | None = None,
                      notes: list[str] | None = None, meta: DatasetMeta | None = None) -> np.ndarray:
    """(H, W) uint8 scribble label map of one parsed labelme file (`json_path` names it in messages).

    `image_size` (H, W) is the real image's size; imageHeight / imageWidth must agree with it.
    Without it, they set the canvas. DatasetError naming the file on any problem; notes as on
    the XML path (clamped points, a file that marks no pixel).
    """
    try:
        json_hw = _json_size(data)
        if image_size is None and json_hw is None:
            raise ValueError("no imageHeight / imageWidth and no image size given")
        h, w = tuple(image_size) if image_size is not None else json_hw
        if json_hw is not None and json_hw != (h, w):
            raise ValueError(f"imageWidth x imageHeight is {json_hw[1]}x{json_hw[0]} but the image "
                             f"is {w}x{h}")
        check_canvas(h, w)
        strokes = labelme_strokes(data, meta)
    except ValueError as e:
        raise DatasetError(f"{json_path}: {e}") from None
    canvas = draw_strokes(strokes, (h, w), notes, json_path)
    if notes is not None and not any(pts for _, pts, _ in strokes):
        notes.append(f"{json_path}: no shape with points: the scribble marks no pixel (all 255)")
    return canvas


def rasterize_labelme_json(json_path: str, image_size: tuple[int, int] | None = None,
                           notes: list[str] | None = None, meta: DatasetMeta | None = None) -> np.ndarray:
    """rasterize_labelme of the file at `json_path`."""
    return rasterize_labelme(read_labelme(json_path), json_path, image_size, notes, meta)


def _embedded_size(data: dict, json_path: str) -> tuple[int, int] | None:
    """(H, W) of the image embedded as imageData, or None if there is none. Only its header is
    read (nothing is decoded); a size past Pillow's decompression-bomb limit is refused."""
    blob = data.get("imageData")
    if not blob:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked below
            with Image.open(io.BytesIO(base64.b64decode(blob))) as img:
                w, h = img.size
    except Image.DecompressionBombError as e:
        raise DatasetError(f"{json_path}: imageData: {e}") from None
    except (binascii.Error, TypeError, ValueError, OSError) as e:
        raise DatasetError(f"{json_path}: imageData is not an image ({e.__class__.__name__})") from None
    try:
        check_canvas(h, w)
    except ValueError as e:
        raise DatasetError(f"{json_path}: imageData: {e}") from None
    return h, w


def find_image(json_path: str, data: dict, images_dir: str | None = None,
               candidates: list[str] | None = None) -> str | None:
    """The image file a labelme file annotates (see the module docstring), or None.

    `candidates`: the names `<id>.*` in images_dir (convert_labelme lists the folder once).
    """
    image_path = data.get("imagePath")
    named = image_path.replace("\\", "/") if isinstance(image_path, str) and image_path.strip() else None
    if images_dir is not None:
        stem = os.path.splitext(os.path.basename(json_path))[0]
        if candidates is None:
            candidates = _images_by_stem(images_dir).get(stem, [])
        if len(candidates) > 1:
            if named is not None and os.path.basename(named) in candidates:
                return os.path.join(images_dir, os.path.basename(named))
            raise DatasetError(f"{json_path}: several images named {stem}.* in {images_dir} "
                               f"({', '.join(candidates)}) and imagePath names none of them")
        return os.path.join(images_dir, candidates[0]) if candidates else None
    if named is None:
        return None
    return os.path.normpath(os.path.join(os.path.dirname(json_path), named))


def _images_by_stem(images_dir: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name in sorted(os.listdir(images_dir)):
        stem, ext = os.path.splitext(name)
        if ext.lower() in IMAGE_EXTENSIONS:
            found.setdefault(stem, []).append(name)
    return found


def labelme_image_size(json_path: str, data: dict, images_dir: str | None = None,
                       candidates: list[str] | None = None) -> tuple[int, int]:
    """(H, W) of the annotated image: its file's header, else the embedded imageData;
    DatasetError naming the JSON if neither is there."""
    path = find_image(json_path, data, images_dir, candidates)
    if path is not None:
        try:
            return read_image_size(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise DatasetError(f"{json_path}: {e}") from None
    hw = _embedded_size(data, json_path)
    if hw is not None:
        return hw
    if path is not None:
        raise DatasetError(f"{json_path}: image {path} not found (and no imageData)")
    if images_dir is not None:
        stem = os.path.splitext(os.path.basename(json_path))[0]
        raise DatasetError(f"{json_path}: no image {stem}.* in {images_dir} (and no imageData)")
    raise DatasetError(f"{json_path}: no imagePath and no imageData; give --images")


def _convert_one(args) -> tuple[int, int, str | None, list[str]]:
    """(labelled, total, problem, notes) for one JSON; the PNG is written only if the file is good."""
    json_path, png_path, images_dir, candidates, meta = args
    notes: list[str] = []
    try:
        data = read_labelme(json_path)
        hw = labelme_image_size(json_path, data, images_dir, candidates)
        label = rasterize_labelme(data, json_path, hw, notes, meta)
        save_png(label, png_path)
    except (DatasetError, OSError) as e:
        return 0, 0, str(e), []
    return int((label != UNLABELLED).sum()), label.size, None, notes


def convert_labelme(json_dir: str, out_dir: str, root: str | None = None, images_dir: str | None = None,
                    workers: int | None = None, meta: DatasetMeta | None = None) -> ConvertStats:
    """Rasterise every json_dir/<id>.json to out_dir/<id>.png. Class names from `meta`, else
    `root`'s dataset.yaml, else VOC's; image sizes as find_image says."""
    if not os.path.isdir(json_dir):
        raise DatasetError(f"{json_dir}: labelme folder not found")
    if images_dir is not None and not os.path.isdir(images_dir):
        raise DatasetError(f"{images_dir}: image folder not found")
    if meta is None:
        if root is not None and not os.path.isdir(root):
            raise DatasetError(f"{root}: dataset root not found")
        try:
            meta = load_meta(root)
        except MetaError as e:
            raise DatasetError(str(e)) from None
    names = sorted(n for n in os.listdir(json_dir) if n.lower().endswith(".json"))
    if not names:
        raise DatasetError(f"{json_dir}: no .json files")
    # never the labelme or image folder (an <id>.png there could replace an image)
    out = claim_output_dir(out_dir, TOOL, "--out", inputs=[json_dir, images_dir])
    out.claim([n[:-5] + ".png" for n in names])
    by_stem = _images_by_stem(images_dir) if images_dir is not None else {}
    jobs = []
    for n in names:
        stem = n[:-5]
        jobs.append((os.path.join(json_dir, n), out.path(stem + ".png"), images_dir,
                     by_stem.get(stem, []) if images_dir is not None else None, meta))
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))

    stats = ConvertStats()
    results = parallel_map(_convert_one, jobs, workers, preload=["datasets.labelme"])
    for labelled, total, problem, notes in tqdm(results, total=len(jobs), desc="scribbles", unit="json"):
        stats.notes += notes
        if problem:
            stats.problems.append(problem)
        else:
            stats.converted += 1
            stats.labelled_pixels += labelled
            stats.total_pixels += total
    return stats
