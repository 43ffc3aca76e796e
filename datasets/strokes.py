"""Scribble strokes -> a label map (SPEC §1): the one rasteriser of the scribble converters.

datasets/convert_scribbles.py (ScribbleSup XML) and datasets/labelme.py (labelme JSON) both
turn their files into strokes and draw them here, so both give the same pixels for the same
strokes; both import this module, and neither imports the other's drawing code (the XML
tool's CLI dispatches --labelme to datasets.labelme: imports point one way).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

UNLABELLED = 255
TOOL = "datasets.convert_scribbles"  # the owner of --out folders (utils.outputs' mark), both sources
FAR = 1e9  # px: coordinates beyond this are clamped anyway; keeps the rounding in int64
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
# OpenCV draws a line of thickness t as a band of half-width t/2 rounded *up* for odd t
# (t=2 -> 3 px, t=3 -> 5 px, for every OpenCV version), so a 3-px stroke is thickness 2.
_CV_THICKNESS_3PX = 2


def check_canvas(h: int, w: int) -> None:
    """ValueError unless an (h, w) label map is a sane image size: not empty, and not more
    pixels than Pillow decodes without calling it a decompression bomb (a file that declares
    20000x20000 would make every tool allocate gigabytes)."""
    if h <= 0 or w <= 0:
        raise ValueError(f"image size {w}x{h} (WxH) is empty")
    if h * w > MAX_PIXELS:
        raise ValueError(f"image size {w}x{h} (WxH) is {h * w:,} pixels, more than {MAX_PIXELS:,} "
                         f"(Pillow's decompression-bomb limit): refused")


def draw_strokes(strokes, image_size: tuple[int, int], notes: list[str] | None = None,
                 where: str = "") -> np.ndarray:
    """(H, W) uint8 canvas of 255 with `strokes` drawn on it, in order (later ones overwrite).

    strokes: [(class index, [(x, y), ...] 0-based integer pixels, closed)], numbered from 1 in
    messages. Each is a 3-px polyline through its points (`closed`: also from the last point
    back to the first); a one-point stroke is a dot (3x3 less its corners), an empty one draws
    nothing. Points outside the image are clamped to its border and, when `notes` is given,
    listed in one note starting with `where` (the file). Shared by the ScribbleSup XML and the
    labelme converters, so both give the same pixels for the same strokes.
    """
    h, w = image_size
    canvas = np.full((h, w), UNLABELLED, np.uint8)
    clamped = []
    for k, (cls, pts, closed) in enumerate(strokes, 1):
        if not len(pts):
            continue  # an empty stroke marks nothing
        raw = np.array(pts, np.int64).reshape(-1, 2)
        pts = np.clip(raw, 0, [w - 1, h - 1]).astype(np.int32)
        outside = int((pts != raw).any(axis=1).sum())
        if outside:
            clamped.append(f"{outside} in stroke {k}")
        if len(pts) == 1:  # OpenCV draws nothing for a one-point polyline; a dot is a stroke
            pts = np.repeat(pts, 2, axis=0)
        cv2.polylines(canvas, [pts.reshape(-1, 1, 2)], isClosed=bool(closed), color=int(cls),
                      thickness=_CV_THICKNESS_3PX, lineType=cv2.LINE_8)
    if notes is not None and clamped:
        notes.append(f"{where}: point(s) outside the {w}x{h} image clamped to its border "
                     f"({', '.join(clamped)})")
    return canvas


@dataclass
class ConvertStats:
    converted: int = 0
    labelled_pixels: int = 0
    total_pixels: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # converted, but worth a look

    @property
    def labelled_percent(self) -> float:
        return 100.0 * self.labelled_pixels / max(1, self.total_pixels)

    def summary(self) -> str:
        lines = [f"converted {self.converted} file(s); labelled pixels {self.labelled_percent:.2f} %"]
        if self.notes:
            lines.append(f"{len(self.notes)} note(s) on converted files:")
            lines += [f"  {n}" for n in self.notes]
        if self.problems:
            lines.append(f"{len(self.problems)} file(s) not converted:")
            lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)
