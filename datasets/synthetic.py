"""A small synthetic dataset in the ScribbleSup layout (SPEC §1) with its distance maps (SPEC §2):
the embedded default that the quickstart, the tests and the demo notebook use.

    python -m datasets.synthetic --out DIR [--preset voc|gray4] [--train N] [--val M]
                                 [--size H W] [--seed S] [--classes K] [--overwrite]

writes, directly under DIR, ImageSets/SegmentationAug/{train,val}.txt, JPEGImages/<id>.jpg,
SegmentationClassAug/<id>.png (mode P, the set's palette), pascal_2012_scribble/<id>.png,
pseudo_label/<id>.png, distance_map/<id>.png (D_s) and distance_pseudo/<id>.png (D_c), plus
`synthetic.json` (parameters and the measured statistics below), which marks DIR as a synthetic
set that a later run may regenerate in place, and `dataset.yaml` (datasets/meta.py): the set's
own classes, background + the K foreground classes it draws, with their palette, so train.py
builds a network with one output per class of the set and eval.py reports only those. Ids are
`train_00000`, `val_00000`, ...

Presets (PRESETS; a variant is one line there): "voc", the default, is described below.
"gray4" is a set unlike VOC: 60 train + 20 val grey single-channel PNGs (JPEGImages/<id>.png,
mode L) of 192x192, four classes background (0), body (1), organ (2), lesion (3): three nested,
organ-like structures (a lopsided body around an organ wall around a bright lesion, like a
ventricle's cavity in its myocardium: smooth star-shaped outlines with jittered radii, a random
stretch, rotation and position; class 3 never touches 0 or 1), a level per class with smooth
texture, partial-volume blur, a bias field and noise, 0-2 tissue-like distractors on the
background. Its masks are dense (no void band) and use its own palette; scribbles and
pseudo-labels come from the same simulation as "voc". Measured (seed 0): scribbles label 2.1 %
of the pixels, pseudo-label mIoU 53.01 % (62.11 % on the pixels both label), 18 of 240
structures missed; ~1.4x the CPU time of the "voc" set, 4.3 MB.

Defaults: 60 train + 20 val images of 128x160 (H x W), K=5 foreground classes. 128x160 keeps
VOC's landscape aspect, is a multiple of 32 (a stride-8 network sees 16x20 features) and leaves
room for 1-4 objects with visible texture; the set takes ~3 s of CPU and 1.2 MB. 60 images are
enough for a small net to learn the cues in minutes on a CPU. Labels are VOC indices 0..K
(background, aeroplane, bicycle, ...: the first K+1 names of `CLASSES`, VOC's colours), and
dataset.yaml lists exactly these K+1 classes: a (K+1)-class network and metric, not VOC's 21
(a class the set never contains could only lower the mean). A sample depends only on (seed,
split, index, size, K): a smaller set is a prefix of a larger one.

What is in an image, and why (it must be learnable, and the CDSP pieces must matter):
- Each class has a base hue and a texture (smooth, stripes, checker, dots, rings, grid), with
  per-instance hue / saturation / brightness jitter, dome shading that darkens the silhouette,
  a light gradient, cast shadows, noise and JPEG: no single pixel value decides the class.
  Each object also has a "head": its last 20-35 % along a random direction, smooth, in a hue
  halfway to the next class's -- recognisable as the class only in context.
  Shapes are ellipses, polygons and blobs of varied size; objects overlap (the mask is the
  visible part; an object less than 35 % visible is not drawn).
- Background: a low-saturation textured field plus 1-3 distractor shapes that are background;
  half of them "chimeras" with one class's hue and another class's texture, so a net must
  learn hue AND texture.
- Full mask: class indices with a 2-px 255 band on every boundary between labels, as VOC.
- Scribbles, as ScribbleSup's: 3-px polylines through the middle of each object (a smooth
  random walk along its long axis inside the object eroded by 2 px, 0.7-1.1 diameters long;
  the first stroke stays on the body, big objects sometimes get a second one anywhere) and
  1-3 strokes on the background at least 3 px from objects.
- Pseudo-labels, like CAM output: each object's visible mask is blurred (sigma 2-6 px),
  modulated by a low-frequency field (+-30-60 %) and by a "discriminative part" ramp, shifted
  up to 4 px, then thresholded at 0.2-0.75 (over- or under-covering, blobby, thin parts lost);
  the object with the highest relative activation wins a pixel. 10 % of the objects are
  missed (never all of an image's); no class outside the image appears. A 1-2 px band of 255
  surrounds every pseudo boundary.
Scribbles alone never see the heads, the silhouettes, the shadows or most distractors, which
the pseudo-labels label densely; the pseudo-labels are mostly wrong near their own boundaries
(where D_c is low) and right in the interiors; scribbles are always right.

Measured on the default set (seed 0): scribbles label 2.7 % of the pixels (6.5 % of object
pixels, 1.9 % of background), all agreeing with the mask; pseudo-label mIoU vs the mask on
the train split 63.32 % with pseudo 255 as background, 3.7 % of the masks' scored pixels
being pseudo 255 (`pseudo_miou`, `pseudo_unlabelled_fraction`: datasets.score_labels'
LabelScorer on utils.metrics, so the numbers `python -m datasets.score_labels --root DIR
--labels pseudo_label` prints), 70.91 % on the pixels both label (`pseudo_miou_labelled`);
over all images, 95 % of pseudo-label pixels are non-255; pseudo-label error rate 11.5 %
within 12.7 px of a pseudo boundary (D_c < 255) against 4.0 % elsewhere; 21 of 179 objects
missed. (At 64x80 scribbles cover ~4-5 %: strokes stay 3 px wide.) `generate()` returns these
statistics and `synthetic.json` keeps them.
Learnability (a 7-layer dilated FCN from scratch, 400 Adam steps, batch 8, scored on 60 val
images; two training seeds): val mIoU 60.8 / 65.1 % from scribbles alone, 74.8 / 71.6 % from
scribbles + pseudo-labels (CE with label smoothing 0.1); 85.3 % from the full masks.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import ndimage
from tqdm import tqdm

from datasets.distance_map import pseudo_distance_map, scribble_distance_map
from datasets.layout import (
    CLASSES, DEFAULT_FOLDERS, IGNORE_INDEX, PSEUDO_SYNTHETIC, SPLIT_DIR, DatasetError, Layout,
)
from datasets.meta import META_FILE, DatasetMeta, write_meta
from datasets.score_labels import LabelScorer
from utils.io import atomic_path, save_png
from utils.metrics import ConfusionMeter

MARKER = "synthetic.json"
SPLITS = ("train", "val")
TEXTURES = ("smooth", "stripes", "checker", "dots", "rings", "grid")
JPEG_PARAMS = dict(format="JPEG", quality=90, subsampling=2, optimize=False, progressive=False)
FOLDERS = {**DEFAULT_FOLDERS, "pseudo": PSEUDO_SYNTHETIC}
_ID = re.compile(r"^(train|val)_\d{5,}$")


# ----------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class Preset:
    """What differs between the embedded sets (`--preset`); a variant is one line of PRESETS,
    e.g. `"gray4_void": Preset("nested", (192, 192), 3, GRAY4_CLASSES, GRAY4_PALETTE, True, True)`."""
    scene: str                    # "shapes": VOC-like objects; "nested": three nested structures
    size: tuple[int, int]         # default H, W
    num_classes: int              # default K (foreground classes, labels 0..K)
    classes: tuple[str, ...] | None = None  # all names, background first; None: the first K+1 VOC names
    palette: tuple | None = None  # one (r, g, b) per class; None: VOC's
    void_band: bool = True        # VOC's 2-px 255 band on every label boundary of the masks
    grey: bool = False            # single-channel PNG images (else RGB JPEG)
    train: int = 60
    val: int = 20

    @property
    def image_suffix(self) -> str:
        return ".png" if self.grey else ".jpg"

    def class_names(self, k: int) -> list[str]:
        """The K+1 names of a set with K foreground classes; ValueError if the preset has no such set."""
        if self.classes is None:
            if not 1 <= k <= len(CLASSES) - 1:
                raise ValueError(f"num_classes (foreground) must be 1..{len(CLASSES) - 1}, got {k}")
            return list(CLASSES[:k + 1])
        if k != len(self.classes) - 1:
            raise ValueError(f"num_classes (foreground) of this preset is {len(self.classes) - 1} "
                             f"({', '.join(self.classes[1:])}), got {k}")
        return list(self.classes)


GRAY4_CLASSES = ("background", "body", "organ", "lesion")  # outer, middle, inner: nested
GRAY4_PALETTE = ((0, 0, 0), (0, 114, 178), (240, 228, 66), (213, 94, 0))  # black, blue, yellow, vermilion
PRESETS = {
    "voc": Preset("shapes", (128, 160), 5),
    "gray4": Preset("nested", (192, 192), 3, GRAY4_CLASSES, GRAY4_PALETTE, void_band=False, grey=True),
}
DEFAULT_PRESET = "voc"


def get_preset(name: str) -> Preset:
    """PRESETS[name]; ValueError naming the presets otherwise."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None


# ----------------------------------------------------------------------------- appearance
@dataclass
class _Style:
    hue: float       # 0..1
    sat: float
    val: float
    texture: str
    contrast: float  # how much the texture darkens


def _class_style(c: int, k: int) -> tuple[float, str]:
    """Base hue and texture of foreground class c (1..k): hues evenly spread, textures cycled."""
    j = c - 1
    return (j / k + 0.03) % 1.0, TEXTURES[j % len(TEXTURES)]


def _hue_jitter(k: int) -> float:
    return min(0.033, 0.25 / k)  # at most +-12 degrees, a quarter of the class spacing


def _hsv_to_rgb(h, s, v):
    h6 = (h % 1.0) * 6.0
    i = np.floor(h6).astype(np.int64) % 6
    f = h6 - np.floor(h6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.empty(h.shape + (3,), np.float32)
    for ch in range(3):
        out[..., ch] = np.choose(i, [rgb[n][ch] for n in range(6)])
    return out


def _smooth_noise(rng, h: int, w: int, cells: int = 4) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a coarse random grid, upsampled bicubically."""
    grid = rng.uniform(-1, 1, (cells, max(2, round(cells * w / h)))).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _texture(kind: str, yy, xx, cy, cx, period: float, angle: float) -> np.ndarray:
    """1 where the texture darkens the surface, 0 elsewhere, in the layer's own frame."""
    if kind == "smooth":
        return np.zeros_like(yy)
    c, s = math.cos(angle), math.sin(angle)
    u = ((xx - cx) * c + (yy - cy) * s) / period
    v = (-(xx - cx) * s + (yy - cy) * c) / period
    if kind == "stripes":
        t = np.sin(2 * np.pi * u) > 0
    elif kind == "checker":
        t = np.sin(2 * np.pi * u) * np.sin(2 * np.pi * v) > 0
    elif kind == "dots":
        t = (u - np.round(u)) ** 2 + (v - np.round(v)) ** 2 < 0.32 ** 2
    elif kind == "rings":
        t = np.sin(2 * np.pi * np.hypot(u, v)) > 0
    elif kind == "grid":
        t = (np.abs(u - np.round(u)) < 0.16) | (np.abs(v - np.round(v)) < 0.16)
    else:
        raise ValueError(kind)
    return t.astype(np.float32)


# ----------------------------------------------------------------------------- geometry
def _shape(rng, h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    """A random ellipse, polygon or blob of equivalent radius ~r centred at (cy, cx)."""
    kind = rng.choice(["ellipse", "polygon", "blob"])
    if kind == "polygon":
        n = int(rng.integers(3, 9))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n)) if n > 4 else \
            rng.uniform(0, 2 * np.pi) + np.arange(n) * 2 * np.pi / n + rng.uniform(-0.3, 0.3, n)
        rad = r * rng.uniform(0.75, 1.3, n)
        pts = [(float(cx + a * math.cos(t)), float(cy + a * math.sin(t))) for a, t in zip(rad, ang)]
        img = Image.new("L", (w, h), 0)
        ImageDraw.Draw(img).polygon(pts, fill=1)
        return np.asarray(img, dtype=bool)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    if kind == "ellipse":
        e, phi = rng.uniform(0.6, 1.5), rng.uniform(0, np.pi)
        a, b = r * e, r / e
        u = dx * math.cos(phi) + dy * math.sin(phi)
        v = -dx * math.sin(phi) + dy * math.cos(phi)
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0
    theta = np.arctan2(dy, dx)
    radius = np.full_like(theta, r)
    for k in (2, 3, 4, 5):
        radius += r * rng.uniform(0, 0.2) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return np.hypot(dy, dx) <= radius


@dataclass
class _Layer:
    mask: np.ndarray  # full shape (before occlusion)
    cls: int          # 0 for a distractor
    style: _Style | None  # None in the grey preset (its levels are per class)
    depth: float
    part: np.ndarray | None = None    # an object's "head": an end of the shape ...
    part_style: _Style | None = None  # ... in the class's second colour


def _part(rng, mask: np.ndarray, c: int, k: int) -> tuple[np.ndarray, _Style]:
    """The last 20-35 % of the shape along a random direction, smooth, in a hue halfway to the
    next class's: a cue that is the class only in context, which central scribbles seldom reach."""
    h, w = mask.shape
    a = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    proj = yy * math.sin(a) + xx * math.cos(a)
    cut = np.quantile(proj[mask], 1 - rng.uniform(0.2, 0.35)) if mask.any() else np.inf
    hue, _ = _class_style(c, k)
    style = _Style((hue + 0.5 / k + rng.uniform(-1, 1) * _hue_jitter(k)) % 1.0,
                   rng.uniform(0.3, 0.55), rng.uniform(0.75, 0.95), "smooth", 0.0)
    return mask & (proj > cut), style


def _layers(rng, h: int, w: int, k: int) -> list[_Layer]:
    """Objects and distractors, back to front; every object at least 35 % visible."""
    m = min(h, w)
    jit = _hue_jitter(k)
    layers: list[_Layer] = []
    n_obj = int(rng.choice([1, 2, 3, 4], p=[0.2, 0.35, 0.3, 0.15]))
    centres = []
    for _ in range(n_obj):
        r = m * rng.uniform(0.12, 0.34)
        if centres and rng.random() < 0.5:   # next to an earlier object: occlusion
            py, px, pr = centres[int(rng.integers(len(centres)))]
            a = rng.uniform(0, 2 * np.pi)
            d = (pr + r) * rng.uniform(0.35, 0.9)
            cy, cx = py + d * math.sin(a), px + d * math.cos(a)
        else:
            cy, cx = rng.uniform(0.12, 0.88) * h, rng.uniform(0.1, 0.9) * w
        cy, cx = float(np.clip(cy, 0.05 * h, 0.95 * h)), float(np.clip(cx, 0.05 * w, 0.95 * w))
        centres.append((cy, cx, r))
        c = int(rng.integers(1, k + 1))
        hue, tex = _class_style(c, k)
        style = _Style((hue + rng.uniform(-jit, jit)) % 1.0, rng.uniform(0.55, 0.95),
                       rng.uniform(0.6, 0.95), tex, rng.uniform(0.3, 0.5))
        shape = _shape(rng, h, w, cy, cx, r)
        layers.append(_Layer(shape, c, style, rng.uniform(0, 1), *_part(rng, shape, c, k)))
    for _ in range(int(rng.integers(1, 4))):
        r = m * rng.uniform(0.07, 0.2)
        cy, cx = rng.uniform(0.05, 0.95) * h, rng.uniform(0.05, 0.95) * w
        if rng.random() < 0.5:  # chimera: one class's hue, another class's texture
            hue, own = _class_style(int(rng.integers(1, k + 1)), k)
            tex = str(rng.choice([t for t in TEXTURES if t != own]))
            style = _Style((hue + rng.uniform(-jit, jit)) % 1.0, rng.uniform(0.5, 0.9),
                           rng.uniform(0.55, 0.9), tex, rng.uniform(0.3, 0.5))
        else:                   # neutral clutter
            style = _Style(rng.uniform(0, 1), rng.uniform(0.0, 0.3), rng.uniform(0.3, 0.9),
                           str(rng.choice(TEXTURES)), rng.uniform(0.2, 0.5))
        # mostly behind the objects, sometimes in front (occluding them)
        layers.append(_Layer(_shape(rng, h, w, cy, cx, r), 0, style, rng.uniform(-0.8, 0.5)))
    layers.sort(key=lambda l: l.depth)
    while True:  # drop barely visible objects until every remaining one is visible enough
        owner = _owner(layers, h, w)
        bad = [i for i, l in enumerate(layers) if l.cls and
               (owner == i).sum() < max(0.35 * l.mask.sum(), 0.004 * h * w)]
        if not bad:
            return layers
        del layers[bad[0]]


def _owner(layers: list[_Layer], h: int, w: int) -> np.ndarray:
    """Index of the front-most layer at each pixel, -1 for the background."""
    owner = np.full((h, w), -1, np.int32)
    for i, l in enumerate(layers):
        owner[l.mask] = i
    return owner


# Grey preset: mean level (0..1) of background, body, organ, lesion, drawn per image from these
# ranges: they overlap once the bias field (+-15-30 %) and the texture are on, as in MR.
_GREY_LEVELS = ((0.08, 0.2), (0.42, 0.55), (0.24, 0.36), (0.66, 0.84))


def _radius(rng, base: float, lopsided: tuple[float, float], wobble: float):
    """A smooth random radius of the angle: base * (1 + a one-sided bulge + harmonics 2-4),
    as (base, amplitudes, phases) for `_radius_at`."""
    amp = np.array([rng.uniform(*lopsided), *rng.uniform(0, wobble, 3)])
    return base, amp, rng.uniform(0, 2 * np.pi, 4)


def _radius_at(radius, theta: np.ndarray, floor: float) -> np.ndarray:
    base, amp, phase = radius
    k = np.arange(1, 5).reshape((4,) + (1,) * theta.ndim)
    r = base * (1 + (amp.reshape(k.shape) * np.cos(k * theta + phase.reshape(k.shape))).sum(0))
    return np.maximum(r, floor)


def _nested_layers(rng, h: int, w: int) -> list[_Layer]:
    """0-2 background distractors (other tissue, behind), then three nested structures, like a
    ventricle's cavity in its wall in a body: star-shaped around one centre in a rotated,
    stretched frame, the middle one a wall of varying thickness, the outer one lopsided.
    Each structure surrounds the next by at least one pixel (4-neighbourhood), at any size."""
    m = min(h, w)
    layers = []
    for _ in range(int(rng.integers(0, 3))):
        cy, cx = rng.uniform(0.05, 0.95) * h, rng.uniform(0.05, 0.95) * w
        layers.append(_Layer(_shape(rng, h, w, cy, cx, m * rng.uniform(0.05, 0.12)), 0, None, -1.0))
    radii = (_radius(rng, m * rng.uniform(0.08, 0.15), (0.0, 0.0), 0.08),    # lesion
             _radius(rng, m * rng.uniform(0.06, 0.1), (0.0, 0.35), 0.1),     # organ: its wall
             _radius(rng, m * rng.uniform(0.07, 0.14), (0.1, 0.6), 0.12))    # body around it
    floor = max(0.02 * m, 2.0)
    e, phi = rng.uniform(0.8, 1.25), rng.uniform(0, np.pi)
    ring = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    reach = sum(_radius_at(r, ring, floor) for r in radii).max() * max(e, 1 / e)
    shrink = min(1.0, (m / 2 - 3) / reach)  # the body stays inside the image
    reach *= shrink
    cy = rng.uniform(min(reach + 2, h / 2), max(h - reach - 2, h / 2))
    cx = rng.uniform(min(reach + 2, w / 2), max(w - reach - 2, w / 2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = ((xx - cx) * math.cos(phi) + (yy - cy) * math.sin(phi)) / e
    v = (-(xx - cx) * math.sin(phi) + (yy - cy) * math.cos(phi)) * e
    rho, theta = np.hypot(u, v) / shrink, np.arctan2(v, u)
    bound = np.cumsum([_radius_at(r, theta, floor) for r in radii], axis=0)
    inner = rho <= bound[0]
    middle = (rho <= bound[1]) | ndimage.binary_dilation(inner)   # nested by construction
    outer = (rho <= bound[2]) | ndimage.binary_dilation(middle)
    none = np.zeros((h, w), bool)
    for c, mask in ((1, outer), (2, middle), (3, inner)):
        layers.append(_Layer(mask, c, None, float(c), none))
    return layers


# ----------------------------------------------------------------------------- rendering
def _paint_style(rng, style: _Style, mask, h, w, light, scale, shade: bool) -> np.ndarray:
    """RGB of one layer over the whole frame: hue/texture cue, dome shading, light gradient."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ys, xs = np.nonzero(mask)
    cy, cx = (ys.mean(), xs.mean()) if len(ys) else (h / 2, w / 2)
    period = rng.uniform(5, 9) * scale
    tex = _texture(style.texture, yy, xx, cy, cx, period, rng.uniform(0, np.pi))
    hue = style.hue + 0.012 * _smooth_noise(rng, h, w)
    sat = np.full((h, w), style.sat, np.float32)
    val = style.val * (1 - style.contrast * tex)
    if shade:  # a lit dome: the silhouette is darker and greyer than the interior
        d = ndimage.distance_transform_edt(mask)
        dome = np.sqrt(1 - (1 - np.clip(d / max(d.max(), 1.0), 0, 1)) ** 2).astype(np.float32)
        radius = max(math.sqrt(mask.sum() / math.pi), 1.0)
        grad = ((yy - cy) * light[0] + (xx - cx) * light[1]) / radius
        val = val * (0.45 + 0.55 * dome) * (1 - 0.15 * np.clip(grad, -1, 1))
        sat = sat * (0.6 + 0.4 * dome)
    return _hsv_to_rgb(hue, np.clip(sat, 0, 1), np.clip(val, 0, 1))


def _render(rng, layers: list[_Layer], h: int, w: int) -> np.ndarray:
    """Painter's algorithm over a textured background, with cast shadows, blur, noise."""
    scale = min(h, w) / 128             # sizes below are for 128 px; textures never finer
    tex_scale, blur_scale = max(scale, 1.0), max(scale, 0.5)
    a = rng.uniform(0, 2 * np.pi)
    light = (math.sin(a), math.cos(a))   # shadows fall this way; that side is darker
    bg = _Style(rng.uniform(0, 1), rng.uniform(0.05, 0.25), rng.uniform(0.4, 0.8),
                str(rng.choice(TEXTURES[1:])), rng.uniform(0.08, 0.2))
    canvas = _paint_style(rng, bg, np.ones((h, w), bool), h, w, light, tex_scale * 1.6, shade=False)
    canvas *= (1 + 0.2 * _smooth_noise(rng, h, w, 3))[..., None]
    off = rng.uniform(2.5, 5) * blur_scale
    for l in layers:
        shadow = ndimage.shift(l.mask.astype(np.float32), (off * light[0], off * light[1]), order=0)
        shadow = ndimage.gaussian_filter(shadow, 2.5 * blur_scale) * rng.uniform(0.3, 0.5)
        canvas *= (1 - shadow)[..., None]
        rgb = _paint_style(rng, l.style, l.mask, h, w, light, tex_scale, shade=True)
        canvas[l.mask] = rgb[l.mask]
        if l.part is not None:
            rgb = _paint_style(rng, l.part_style, l.mask, h, w, light, tex_scale, shade=True)
            canvas[l.part] = rgb[l.part]
    canvas = ndimage.gaussian_filter(canvas, (0.6, 0.6, 0))
    canvas += rng.normal(0, rng.uniform(2, 6) / 255, canvas.shape).astype(np.float32)
    return (np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8)


def _render_grey(rng, layers: list[_Layer], h: int, w: int) -> np.ndarray:
    """(H, W) uint8: a level per class with smooth texture, partial-volume blur, a bias field
    and noise; distractors take a tissue-like level."""
    scale = max(min(h, w) / 128, 0.5)
    levels = [rng.uniform(*r) for r in _GREY_LEVELS]
    canvas = levels[0] + 0.05 * _smooth_noise(rng, h, w, 12) + 0.03 * _smooth_noise(rng, h, w, 5)
    for l in layers:
        level = levels[l.cls] if l.cls else rng.uniform(0.3, 0.55)
        tex = level + rng.uniform(0.02, 0.05) * _smooth_noise(rng, h, w, int(rng.integers(8, 17)))
        canvas[l.mask] = tex[l.mask]
    canvas = ndimage.gaussian_filter(canvas, rng.uniform(0.6, 1.2) * scale)
    canvas *= 1 + rng.uniform(0.15, 0.3) * _smooth_noise(rng, h, w, 3)
    canvas += rng.normal(0, rng.uniform(0.015, 0.04), canvas.shape).astype(np.float32)
    return (np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8)


def _void_band(label: np.ndarray) -> np.ndarray:
    """Pixels with a differently labelled 8-neighbour: a 2-px band on each label boundary."""
    return ndimage.maximum_filter(label, 3) != ndimage.minimum_filter(label, 3)


# ----------------------------------------------------------------------------- scribbles
def _walk(rng, dist: np.ndarray, margin: float, start, angle: float, length: float, step: float):
    """A smooth random walk from `start` that keeps `dist > margin` (stays inside the region)."""
    h, w = dist.shape

    def inside(p):
        y, x = int(round(p[0])), int(round(p[1]))
        return 0 <= y < h and 0 <= x < w and dist[y, x] > margin

    pts, cur, total = [start], np.asarray(start, float), 0.0
    while total < length:
        for attempt in range(4):  # bend a little to follow the shape; stop at a wall, no hooks
            a = angle + rng.normal(0, 0.15 + 0.15 * attempt)
            nxt = cur + step * np.array([math.sin(a), math.cos(a)])
            if inside(nxt) and inside((cur + nxt) / 2):
                break
        else:
            break
        angle, cur = a, nxt
        pts.append(tuple(cur))
        total += step
    return pts


def _stroke(rng, region: np.ndarray, margin: float, length: float, step: float, central: bool):
    """One scribble through the region, both ways along its long axis from a start point
    (`central`: drawn towards the middle, as people scribble objects; else anywhere)."""
    dist = ndimage.distance_transform_edt(region)
    if dist.max() <= margin:
        margin = max(dist.max() - 1, 0)  # tiny region: a short stroke through its middle
    ys, xs = np.nonzero(dist > margin)
    weight = dist[ys, xs] if central else np.ones(len(ys))
    i = rng.choice(len(ys), p=weight / weight.sum())
    start = (float(ys[i]), float(xs[i]))
    if len(ys) > 2:  # principal axis of the region
        cov = np.cov(np.stack([ys, xs]).astype(float))
        ev = np.linalg.eigh(cov)[1][:, -1]
        angle = math.atan2(ev[0], ev[1])
    else:
        angle = 0.0
    angle += rng.normal(0, 0.3)
    fwd = _walk(rng, dist, margin, start, angle, length / 2, step)
    back = _walk(rng, dist, margin, start, angle + np.pi, length / 2, step)
    return back[::-1] + fwd[1:]


def _scribbles(rng, mask: np.ndarray, owner: np.ndarray, layers: list[_Layer]) -> np.ndarray:
    """ScribbleSup-like: 3-px polylines inside each object and on the background; 255 elsewhere."""
    h, w = mask.shape
    scale = min(h, w) / 128
    # Strokes stay 3 px wide at any size; shorter ones keep small images near 3-4 % coverage.
    shorter = min(scale, 1.0) ** 0.5
    strokes = []  # (class, points), drawn in order
    bg = mask == 0
    for _ in range(int(rng.integers(1, 4))):
        if bg.sum() > 0:
            strokes.append((0, _stroke(rng, bg, 3, rng.uniform(0.25, 0.5) * w * shorter,
                                              6 * max(scale, 0.5), False)))
    for i, l in enumerate(layers):
        if not l.cls:
            continue
        vis = owner == i
        diameter = 2 * math.sqrt(vis.sum() / math.pi)
        body = vis & ~l.part
        n = 2 if diameter > 0.35 * min(h, w) and rng.random() < 0.5 else 1
        for j in range(n):  # the first stroke through the body, a second one anywhere
            region = body if j == 0 and body.sum() >= 0.3 * vis.sum() else vis
            length = rng.uniform(0.7, 1.1) * diameter / n ** 0.5 * shorter
            strokes.append((l.cls, _stroke(rng, region, 2, length, 4 * max(scale, 0.75), True)))
    img = Image.new("L", (w, h), IGNORE_INDEX)
    draw = ImageDraw.Draw(img)
    for c, pts in strokes:
        xy = [(x, y) for y, x in pts]
        if len(xy) == 1:
            draw.ellipse([xy[0][0] - 1, xy[0][1] - 1, xy[0][0] + 1, xy[0][1] + 1], fill=c)
        else:
            draw.line(xy, fill=c, width=3, joint="curve")
    scr = np.array(img)
    scr[(scr != IGNORE_INDEX) & (scr != mask)] = IGNORE_INDEX  # never off the object / on void
    return scr


# ----------------------------------------------------------------------------- pseudo-labels
def _pseudo_label(rng, owner: np.ndarray, layers: list[_Layer]) -> tuple[np.ndarray, int]:
    """CAM-like pseudo-label: blobby, mis-sized, a few px off, some objects missed, 255 bands."""
    h, w = owner.shape
    scale = max(min(h, w) / 128, 0.5)  # CAM blur and offsets shrink with the image
    objs = [i for i, l in enumerate(layers) if l.cls]
    missed = [i for i in objs if rng.random() < 0.1]
    if len(missed) == len(objs):
        missed = missed[:-1]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    best = np.ones((h, w), np.float32)   # relative activation needed to claim a pixel
    label = np.zeros((h, w), np.uint8)
    for i in objs:
        vis = owner == i
        act = ndimage.gaussian_filter(vis.astype(np.float32), rng.uniform(2, 6) * scale)
        act *= 1 + rng.uniform(0.3, 0.6) * _smooth_noise(rng, h, w, 6)  # wobbly, never far from it
        ys, xs = np.nonzero(vis)
        a = rng.uniform(0, 2 * np.pi)  # CAMs favour a discriminative part: a ramp across the object
        proj = (yy - ys.mean()) * math.sin(a) + (xx - xs.mean()) * math.cos(a)
        span = max(float(np.ptp(ys * math.sin(a) + xs * math.cos(a))), 1.0)
        act *= 1 - rng.uniform(0, 0.8) * np.clip(proj / span + 0.5, 0, 1)
        act = ndimage.shift(act, rng.uniform(-4, 4, 2) * scale, order=1)
        rel = act / rng.uniform(0.2, 0.75)
        if i in missed:
            continue
        win = rel > best
        label[win], best[win] = layers[i].cls, rel[win]
    width = max(1, round(int(rng.integers(1, 3)) * min(scale, 1.0)))  # 1-2 px, 1 in small images
    band = ndimage.maximum_filter(label, 2 * width + 1) != ndimage.minimum_filter(label, 2 * width + 1)
    label[band] = IGNORE_INDEX
    return label, len(missed)


# ----------------------------------------------------------------------------- one sample
def sample(split: str, index: int, size: tuple[int, int] | None = None, seed: int = 0,
           num_classes: int | None = None, preset: str = DEFAULT_PRESET) -> dict:
    """One synthetic sample, in memory: image (H,W,3) uint8 ((H,W) for a grey preset), mask,
    scribble, pseudo (H,W) uint8.

    Depends only on (preset, seed, split, index, size, num_classes), never on the other samples.
    `num_classes` is the number K of foreground classes (labels 0..K); size and K default to
    the preset's.
    """
    p = get_preset(preset)
    h, w = p.size if size is None else size
    k = p.num_classes if num_classes is None else num_classes
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    if p.scene == "nested":
        layers = _nested_layers(rng, h, w)
        owner = _owner(layers, h, w)
        image = _render_grey(rng, layers, h, w)
    else:
        layers = _layers(rng, h, w, k)
        owner = _owner(layers, h, w)
        image = _render(rng, layers, h, w)
    label = np.zeros((h, w), np.uint8)
    for i, l in enumerate(layers):
        label[owner == i] = l.cls
    mask = label.copy()
    if p.void_band:
        mask[_void_band(label)] = IGNORE_INDEX
    scribble = _scribbles(rng, mask, owner, layers)
    pseudo, missed = _pseudo_label(rng, owner, layers)
    return dict(image=image, mask=mask, scribble=scribble, pseudo=pseudo,
                objects=sum(1 for l in layers if l.cls), missed=missed)


# ----------------------------------------------------------------------------- writing a set
def _is_synthetic(out: str) -> bool:
    try:
        with open(os.path.join(out, MARKER), encoding="utf-8") as f:
            return json.load(f).get("generator") == "datasets.synthetic"
    except (OSError, ValueError, AttributeError):
        return False


def _prepare(out: str, overwrite: bool, ids: set, image_suffix: str) -> None:
    """Refuse a non-empty foreign folder; in a previous synthetic set, remove ids no longer made
    (and images of another preset's suffix)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise DatasetError(f"{out}: exists and is not a directory")
    if not os.path.isdir(out) or not os.listdir(out):
        return
    if not _is_synthetic(out):
        if overwrite:
            return
        raise DatasetError(
            f"{out}: directory is not empty and is not a synthetic set (no {MARKER}); refusing to "
            f"write into it. Choose an empty or new directory, or pass --overwrite (overwrite=True) "
            f"to write anyway (files with the same names are replaced, nothing else is removed).")
    for split in SPLITS:  # until the new lists are written, the set is visibly unfinished
        path = os.path.join(out, SPLIT_DIR, f"{split}.txt")
        if os.path.isfile(path):
            os.unlink(path)
    old_meta = os.path.join(out, META_FILE)  # ours (the marker says so): the new set writes its own
    if os.path.isfile(old_meta):
        os.unlink(old_meta)
    for field, sub in FOLDERS.items():  # not Layout: the old dataset.yaml is gone
        folder = os.path.join(out, sub)
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            stem, ext = os.path.splitext(name)
            stale = stem not in ids or (field == "image" and ext != image_suffix)
            if _ID.match(stem) and stale and ext in (".jpg", ".png"):
                os.unlink(os.path.join(folder, name))


def _write_json(obj: dict, path: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def dataset_meta(preset: str = DEFAULT_PRESET, num_classes: int | None = None) -> DatasetMeta:
    """The description (dataset.yaml) of a preset's set with K = num_classes foreground classes."""
    p = get_preset(preset)
    names = p.class_names(p.num_classes if num_classes is None else num_classes)
    d = dict(classes=names, background=0, ignore_index=IGNORE_INDEX, image_suffix=p.image_suffix,
             splits_dir=SPLIT_DIR.replace(os.sep, "/"))
    if p.palette is not None:
        d["palette"] = [list(c) for c in p.palette]
    return DatasetMeta.from_dict(d, f"datasets.synthetic preset {preset}")


def generate(out: str, train: int | None = None, val: int | None = None,
             size: tuple[int, int] | None = None, seed: int = 0, num_classes: int | None = None,
             overwrite: bool = False, progress: bool = True, preset: str = DEFAULT_PRESET) -> dict:
    """Write a synthetic set under `out` (layout: module docstring) and return its summary.

    `preset` names an entry of PRESETS ("voc", the default, or "gray4"); train, val, size and
    num_classes default to its values. `num_classes` is the number K of foreground classes
    (labels 0..K; "voc": VOC indices 1..K, any of 1..20; "gray4": 3). The summary holds the
    parameters (with `preset` unless it is the default), the class names, and the measured
    statistics (scribble coverage, pseudo-label mIoU vs the masks, ...). Every preset writes
    `<out>/dataset.yaml` (its K+1 classes and palette). Same arguments, same bytes.
    """
    p = get_preset(preset)
    train = p.train if train is None else train
    val = p.val if val is None else val
    num_classes = p.num_classes if num_classes is None else num_classes
    h, w = (int(v) for v in (p.size if size is None else size))
    if train < 1 or val < 1:
        raise ValueError(f"need at least one train and one val image, got train={train} val={val}")
    if h < 32 or w < 32:
        raise ValueError(f"size {h}x{w} too small: need at least 32x32")
    meta = dataset_meta(preset, num_classes)  # ValueError for a K the preset has no names for
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    out = os.fspath(out)
    split_ids = {s: [f"{s}_{i:05d}" for i in range(n)] for s, n in (("train", train), ("val", val))}
    _prepare(out, overwrite, {i for ids in split_ids.values() for i in ids}, p.image_suffix)

    n_lab = num_classes + 1
    params = dict(train=train, val=val, size=[h, w], seed=seed, num_classes=num_classes)
    if preset != DEFAULT_PRESET:
        params["preset"] = preset
    summary = dict(generator="datasets.synthetic", params=params, complete=False,
                   classes=list(meta.classes), pseudo_folder=PSEUDO_SYNTHETIC)
    os.makedirs(out, exist_ok=True)
    _write_json(summary, os.path.join(out, MARKER))  # marks `out` as ours before any data lands
    # Every preset describes its own classes, so a network gets one output per class the set
    # has and a report lists only those ("voc": the first K+1 VOC names and colours).
    write_meta(os.path.join(out, META_FILE), meta.to_dict(),
               f"written by python -m datasets.synthetic --preset {preset}")
    palette = meta.palette_array()

    layout = Layout(out, FOLDERS)
    # Pseudo-label mIoU on the train split, as `python -m datasets.score_labels --root <out>
    # --labels pseudo_label` prints it (pseudo 255 as background), and on the pixels both label.
    scorer = LabelScorer(n_lab)
    labelled = ConfusionMeter(n_lab, IGNORE_INDEX)
    scr_px = scr_ok = pseudo_px = objects = missed = 0
    err = np.zeros((2, 2), np.int64)  # [near a pseudo boundary (D_c < 255), interior] x [wrong, all]
    jobs = [(s, i, id_) for s in SPLITS for i, id_ in enumerate(split_ids[s])]
    for split, i, id_ in tqdm(jobs, desc="synthetic", unit="img", disable=not progress):
        smp = sample(split, i, (h, w), seed, num_classes, preset)
        image_path = os.path.join(layout.folder("image"), id_ + p.image_suffix)
        if p.grey:
            save_png(smp["image"], image_path)
        else:
            with atomic_path(image_path) as tmp:
                Image.fromarray(smp["image"], "RGB").save(tmp, **JPEG_PARAMS)
        save_png(smp["mask"], layout.path("mask", id_), palette=palette)
        save_png(smp["scribble"], layout.path("scribble", id_))
        save_png(smp["pseudo"], layout.path("pseudo", id_))
        save_png(scribble_distance_map(smp["scribble"]), layout.path("dist_s", id_))
        dist_c = pseudo_distance_map(smp["pseudo"])
        save_png(dist_c, layout.path("dist_c", id_))

        mask, scr, pseudo = smp["mask"], smp["scribble"], smp["pseudo"]
        if split == "train":
            scorer.add(pseudo, mask)
            labelled.update(torch.from_numpy(pseudo),
                            torch.from_numpy(np.where(pseudo == IGNORE_INDEX, IGNORE_INDEX, mask)))
        both = (mask != IGNORE_INDEX) & (pseudo != IGNORE_INDEX)
        for row, where in enumerate((both & (dist_c < 255), both & (dist_c == 255))):
            err[row] += ((pseudo[where] != mask[where]).sum(), where.sum())
        lab = scr != IGNORE_INDEX
        scr_px += int(lab.sum())
        scr_ok += int((scr[lab] == mask[lab]).sum())
        pseudo_px += int((pseudo != IGNORE_INDEX).sum())
        objects, missed = objects + smp["objects"], missed + smp["missed"]

    for split, ids in split_ids.items():  # last: a set without its id lists is visibly unfinished
        path = os.path.join(out, SPLIT_DIR, f"{split}.txt")
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write("\n".join(ids) + "\n")

    total = len(jobs) * h * w
    scored = scorer.scores()
    summary.update(complete=True, stats=dict(
        scribble_coverage=round(scr_px / total, 4),
        scribble_agreement=round(scr_ok / max(scr_px, 1), 4),
        pseudo_miou=round(scored["miou"], 4),
        pseudo_unlabelled_fraction=round(scored["unlabelled_fraction"], 4),
        pseudo_miou_labelled=round(labelled.scores()["miou"], 4),
        pseudo_coverage=round(pseudo_px / total, 4),
        pseudo_error_near_boundary=round(err[0, 0] / max(err[0, 1], 1), 4),
        pseudo_error_interior=round(err[1, 0] / max(err[1, 1], 1), 4),
        objects=objects, missed_objects=missed))
    _write_json(summary, os.path.join(out, MARKER))
    return {**summary, "root": out}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m datasets.synthetic", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    voc, gray4 = PRESETS["voc"], PRESETS["gray4"]
    p.add_argument("--out", required=True, help="output directory (the dataset root)")
    p.add_argument("--preset", choices=list(PRESETS), default=DEFAULT_PRESET,
                   help="which set: voc (VOC-like RGB objects, the default) or gray4 (grey PNGs, "
                        "background + three nested structures); the defaults below are the preset's")
    p.add_argument("--train", type=int, default=None, help=f"number of train images (default {voc.train})")
    p.add_argument("--val", type=int, default=None, help=f"number of val images (default {voc.val})")
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help=f"image height and width (default voc {voc.size[0]} {voc.size[1]}, "
                        f"gray4 {gray4.size[0]} {gray4.size[1]})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--classes", type=int, default=None, metavar="K",
                   help=f"foreground classes, VOC indices 1..K (default {voc.num_classes}; gray4: "
                        f"{gray4.num_classes} only)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty directory that is not a synthetic set")
    args = p.parse_args(argv)
    try:
        s = generate(args.out, args.train, args.val, None if args.size is None else tuple(args.size),
                     args.seed, args.classes, overwrite=args.overwrite, preset=args.preset)
    except (DatasetError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    st, par = s["stats"], s["params"]
    print(f"wrote {par['train']} train + {par['val']} val images ({par['size'][0]}x{par['size'][1]}, "
          f"classes {', '.join(s['classes'])}) to {args.out}\n"
          f"scribbles label {100 * st['scribble_coverage']:.1f} % of pixels; pseudo-label mIoU "
          f"vs masks (train, 255 as background, as datasets.score_labels) "
          f"{100 * st['pseudo_miou']:.2f} % ({100 * st['pseudo_miou_labelled']:.2f} % on the pixels "
          f"both label); "
          f"{st['missed_objects']}/{st['objects']} objects missed; pseudo-labels in {PSEUDO_SYNTHETIC}/")


if __name__ == "__main__":
    main()
