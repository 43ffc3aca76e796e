"""Scribbles simulated from full masks (SPEC §1 layout): the authors' extended-version recipe,
used for the scribble-robustness variants (R1/R2/R3 = one seed each).

    python -m datasets.simulate_scribbles --masks VOC2012/SegmentationClassAug \\
        --out VOC2012/pascal_2012_scribble_r1 --seed 1 [--ids LIST.txt] [--workers N] \\
        [--width 3] [--overwrite]

Reads every <id>.png full mask in --masks (SegmentationClassAug style: 0..20 class indices,
255 = void / boundary band; mode P or L) and writes <out>/<id>.png, a scribble like
pascal_2012_scribble's: mode L, the class index on stroke pixels, 255 everywhere else.

The recipe is the one our issue gives for the authors' extended version (objects = 8-connected
class components, one stroke per object along its skeleton or, for a large blob, its inner
rim, one background stroke, strokes clipped to their own object); each step and why:
- Objects are the 8-connected components of each foreground class 1..20: the masks carry no
  instances, and an annotator draws one stroke per visible piece. Objects of <= 5 px get no
  stroke (`min_object`): nobody scribbles on a few stray pixels.
- Each object's stroke follows its skeleton, as a human's stroke runs through the middle of an
  object. `skeletonize` is Guo-Hall two-subiteration thinning (the algorithm behind
  skimage.morphology.thin; skimage is not installed): unlike plain Zhang-Suen it neither erases
  2x2 squares nor leaves staircases 2 px thick, so the result is 1 px thin (a 2x2 knot can stay
  where branches meet) and keeps the object's connectivity. Each subiteration re-examines only
  the pixels next to a just-deleted one (the same result as the whole-image iteration, in time
  linear in the area), which keeps a whole-image background cheap (~15 ms at 375x500).
- The skeleton's largest 8-connected component becomes a pixel graph (8-neighbours, edge
  weight 1 or sqrt 2) and its minimum spanning tree (a skeleton may have loops around holes;
  a tree has exactly one path between two pixels). A tiny random jitter on the weights breaks
  ties, so different seeds cut loops and staircases differently. A random leaf is the root;
  the stroke is the tree path from it to another leaf drawn with probability proportional to
  the path's length, so long limbs are preferred but not forced.
- A compact blob (a disc, a square, a nearly round ellipse) thins to a dot or a short segment
  that would label almost nothing of a large object. Rule: if the object has >= 100 px
  (`BLOB_MIN_AREA`) and its skeleton tree is shorter in total than half the radius of the disc
  of the same area (0.5 sqrt(area / pi); for an ellipse's medial axis, an axis ratio above
  ~0.88), the stroke is instead a random arc (25-50 % of the way round) of the object's inner
  rim -- the contour of the object eroded by 3 px (at most half its inscribed radius) -- with
  a slow random wobble of about 1 px, like a hand tracing inside the edge.
- The path is smoothed by a 5-point moving average (the pixel path is a staircase; a hand is
  not) and drawn with cv2.polylines. OpenCV draws odd widths only: thickness 1 -> 1 px,
  2 -> 3 px, 3 and 4 -> 5 px; the default thickness 2 gives 3-px strokes like ScribbleSup's
  (SPEC §1); the CLI's --width names the width in pixels. The drawn stroke is ANDed with the
  object's own mask, so a stroke never leaves its object and a pixel only ever gets the class
  of the object it belongs to (255 void pixels never get a stroke); where the AND cuts the
  stroke (a neck narrower than the pen) the largest 8-connected piece is kept, so one object
  gets one connected stroke. Should smoothing or wobble move the whole stroke out of a thin
  object, the unsmoothed path (skeleton or rim pixels, all inside) is drawn instead: every
  object > 5 px gets at least one stroke pixel, a single-pixel skeleton a dot (the pen
  dilated, clipped).
- Background (label 0, never 255) gets exactly one stroke, by the same procedure on the largest
  component of its skeleton; no background (or <= 5 px of it), no stroke.
- Randomness: rng = np.random.default_rng([seed, crc32(id)]), so an image's scribble depends
  only on (seed, id): identical for any worker count or order, different for another seed.

Bad input is an error naming the file: a missing --masks folder or one without PNGs (exit 1
at once); an unreadable PNG or a label value outside 0..20 other than 255 (utils.labels' rule)
is collected, every good file is still written (atomically, utils.io.save_png), all problems
are listed at the end and the CLI exits 1. --out is this tool's own folder (docs/outputs.md):
never --masks, nor a folder it did not make, whatever --overwrite says. Existing outputs are
skipped unless --overwrite, so an interrupted run resumes.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
import zlib
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra, minimum_spanning_tree
from tqdm import tqdm

from datasets.layout import IGNORE_INDEX, NUM_CLASSES, DatasetError, read_ids
from datasets.meta import load_meta
from utils.io import OutputError, read_label, save_png
from utils.labels import label_value_problem
from utils.outputs import claim_output_dir
from utils.parallel import parallel_map

MIN_OBJECT = 5          # objects of <= this many pixels get no stroke
BLOB_MIN_AREA = 100     # the rim-arc rule applies from this area on (a disc of radius 5.6 px)
RIM_MARGIN = 3          # px the rim arc stays inside the object's edge
ARC_FRACTION = (0.25, 0.5)  # share of the inner rim a blob's arc covers
SMOOTH_WINDOW = 5       # points of the moving average that smooths a path
BLOB_SKELETON_RATIO = 0.5   # a skeleton shorter than this x the equivalent radius is "short"
JITTER_PX = 5.0         # rim wobble before smoothing (about 1 px after the 25-point average)
JITTER_WINDOW = 25
WEIGHT_JITTER = 1e-3    # random tie-breaking on the skeleton graph's edge weights
TOOL = "datasets.simulate_scribbles"  # the owner of --out folders (utils.outputs' mark)
# Imported once by the worker forkserver (utils.parallel leaves out the `python -m` module itself).
_PRELOAD = ["cv2", "scipy.sparse.csgraph", "datasets.layout", "utils.io", "datasets.simulate_scribbles"]


# ---------------------------------------------------------------------------------------------
# Thinning

def _thinning_luts() -> tuple[np.ndarray, np.ndarray]:
    """Guo-Hall deletion tables for the two subiterations, indexed by the 8-neighbour code.

    Bit k of the code is neighbour x_{k+1}, counter-clockwise from east: E, NE, N, NW, W, SW,
    S, SE. A pixel is deleted when G1 (exactly one 8-connected run of neighbours: deleting it
    keeps connectivity), G2 (2 <= min(N1, N2) <= 3: it is not an end point and not interior)
    and G3 (subiteration 1: not on a south-east boundary side; G3', subiteration 2: north-west)
    hold.
    """
    x = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(bool)
    nxt, nxt2 = np.roll(x, -1, axis=1), np.roll(x, -2, axis=1)   # x_{k+1}, x_{k+2}
    odd, even = x[:, 0::2], x[:, 1::2]                          # x1 x3 x5 x7 / x2 x4 x6 x8
    g1 = (~odd & (even | nxt2[:, 0::2])).sum(1) == 1
    n1 = (odd | even).sum(1)
    n2 = (even | nxt[:, 1::2]).sum(1)
    g2 = np.isin(np.minimum(n1, n2), (2, 3))
    g3 = ~((x[:, 1] | x[:, 2] | ~x[:, 7]) & x[:, 0])
    g3p = ~((x[:, 5] | x[:, 6] | ~x[:, 3]) & x[:, 4])
    return g1 & g2 & g3, g1 & g2 & g3p


_LUTS = _thinning_luts()
_CODE_WEIGHTS = 1 << np.arange(8)


def skeletonize(binary: np.ndarray) -> np.ndarray:
    """(H, W) bool skeleton of a 2-D binary image: Guo-Hall thinning iterated until stable.

    1 px thin, inside the shape, one connected piece per connected piece of the input (outside
    the image counts as background). Only pixels next to a pixel deleted in one of the last two
    subiterations are re-examined; the result equals the plain whole-image iteration.
    """
    binary = np.asarray(binary, dtype=bool)
    if binary.ndim != 2:
        raise ValueError(f"skeletonize expects a 2-D image, got shape {binary.shape}")
    img = np.pad(binary, 1).astype(np.uint8)     # a frame of 0 keeps every neighbour in range
    w = img.shape[1]
    flat = img.reshape(-1)
    offsets = np.array([1, 1 - w, -w, -1 - w, -1, w - 1, w, w + 1])
    # Only pixels with a 4-neighbour off can go (G1); both subiterations start from all of them.
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    start = np.flatnonzero(img > cv2.erode(img, cross))
    slot = np.empty(flat.size, np.int64)

    def distinct(idx: np.ndarray) -> np.ndarray:  # drop repeats in O(len), no sort
        order = np.arange(len(idx))
        slot[idx] = order
        return idx[slot[idx] == order]

    candidates = [start, start]
    sub = 0
    while candidates[0].size or candidates[1].size:
        cand = candidates[sub]
        cand = cand[flat[cand] == 1]
        codes = flat[cand[:, None] + offsets] @ _CODE_WEIGHTS
        gone = cand[_LUTS[sub][codes]]
        flat[gone] = 0           # all codes were taken first: the subiteration is parallel
        touched = (gone[:, None] + offsets).ravel()
        touched = distinct(touched[flat[touched] == 1])
        # this subiteration's other candidates are stable until a neighbour goes
        candidates[sub] = touched
        candidates[1 - sub] = distinct(np.concatenate([candidates[1 - sub], touched]))
        sub = 1 - sub
    return img[1:-1, 1:-1].astype(bool)


# ---------------------------------------------------------------------------------------------
# One stroke in one region

def _largest_component(binary: np.ndarray) -> np.ndarray:
    n, lab, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    if n <= 2:
        return binary.astype(bool)
    return lab == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def _skeleton_tree(skel: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, csr_matrix]:
    """(xy (N, 2) of the skeleton pixels, symmetric spanning tree of their 8-neighbour graph)."""
    ys, xs = np.nonzero(skel)
    n = len(ys)
    index = np.full((skel.shape[0] + 2, skel.shape[1] + 2), -1, np.int64)
    index[ys + 1, xs + 1] = np.arange(n)
    rows, cols, weights = [], [], []
    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):   # each edge once
        j = index[ys + 1 + dy, xs + 1 + dx]
        ok = j >= 0
        rows.append(np.flatnonzero(ok))
        cols.append(j[ok])
        weights.append(np.full(ok.sum(), math.hypot(dy, dx)))
    rows, cols, weights = map(np.concatenate, (rows, cols, weights))
    weights = weights + rng.uniform(0, WEIGHT_JITTER, len(weights))
    tree = minimum_spanning_tree(csr_matrix((weights, (rows, cols)), shape=(n, n)))
    return np.stack([xs, ys], 1), (tree + tree.T).tocsr()


def _tree_path(xy: np.ndarray, tree: csr_matrix, rng: np.random.Generator) -> np.ndarray:
    """A random root leaf to another leaf drawn with probability proportional to path length."""
    if len(xy) == 1:
        return xy
    leaves = np.flatnonzero(np.diff(tree.indptr) == 1)
    root = int(rng.choice(leaves))
    dist, pred = dijkstra(tree, indices=root, return_predecessors=True)
    ends = leaves[leaves != root]
    end = int(rng.choice(ends, p=dist[ends] / dist[ends].sum()))
    path = [end]
    while path[-1] != root:
        path.append(int(pred[path[-1]]))
    return xy[path[::-1]]


def _window_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Means of every `window` consecutive rows (len(values) - window + 1 of them)."""
    csum = np.cumsum(np.pad(values.astype(np.float64), ((1, 0), (0, 0))), axis=0)
    return (csum[window:] - csum[:-window]) / window


def _moving_average(points: np.ndarray, window: int) -> np.ndarray:
    """Each point the mean of its `window` neighbours along the polyline (ends repeated)."""
    if len(points) < 3 or window < 2:
        return points.astype(np.float64)
    half = window // 2
    return _window_mean(np.pad(points, ((half, half), (0, 0)), mode="edge"), 2 * half + 1)


def _rim_arc(region: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    """(jittered arc, the same arc unjittered) along the region eroded by RIM_MARGIN, or None."""
    dt = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    inner = (dt > min(RIM_MARGIN, dt.max() / 2)).astype(np.uint8)
    contours, _ = cv2.findContours(inner, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    rim = max(contours, key=len)[:, 0, :]
    if len(rim) < 8:
        return None
    m = max(2, round(len(rim) * rng.uniform(*ARC_FRACTION)))
    arc = rim[(int(rng.integers(len(rim))) + np.arange(m)) % len(rim)]
    # smoothed white noise drawn long enough that every point averages a full window
    wobble = _window_mean(rng.normal(0, JITTER_PX, (m + JITTER_WINDOW - 1, 2)), JITTER_WINDOW)
    return _moving_average(arc, SMOOTH_WINDOW) + wobble, arc


def _stroke_path(region: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(path to draw, a fallback path whose pixels all lie in the region), both (M, 2) xy."""
    skel = _largest_component(skeletonize(region))
    if not skel.any():  # thinning keeps >= 1 pixel per piece; guard anyway: the deepest pixel
        dt = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 3)
        skel = np.zeros_like(region)
        skel[np.unravel_index(int(np.argmax(dt)), dt.shape)] = True
    xy, tree = _skeleton_tree(skel, rng)
    area = int(region.sum())
    if area >= BLOB_MIN_AREA and tree.sum() / 2 < BLOB_SKELETON_RATIO * math.sqrt(area / math.pi):
        arc = _rim_arc(region, rng)
        if arc is not None:
            return arc
    path = _tree_path(xy, tree, rng)
    return _moving_average(path, SMOOTH_WINDOW), path


def _draw(region: np.ndarray, path: np.ndarray, thickness: int) -> np.ndarray:
    """The polyline through `path`, `thickness` as OpenCV's, clipped to the region."""
    pts = np.rint(path).astype(np.int32)
    if len(pts) == 1:  # OpenCV draws nothing for a one-point polyline; a dot is a stroke
        pts = np.repeat(pts, 2, axis=0)
    canvas = np.zeros(region.shape, np.uint8)
    cv2.polylines(canvas, [pts.reshape(-1, 1, 2)], isClosed=False, color=1,
                  thickness=thickness, lineType=cv2.LINE_8)
    return (canvas > 0) & region


def _region_stroke(region: np.ndarray, rng: np.random.Generator, thickness: int) -> np.ndarray:
    """One connected stroke inside a (padded) region: bool mask of the region's shape."""
    path, inside = _stroke_path(region, rng)
    stroke = _draw(region, path, thickness)
    if not stroke.any():
        stroke = _draw(region, inside, thickness)
    return _largest_component(stroke)


# ---------------------------------------------------------------------------------------------
# One mask

def _check_values(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixel count per value 0..255; ValueError for a value outside 0..num_classes-1 that is
    not 255 (void here; utils.labels' rule)."""
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 mask, got {mask.dtype} {mask.shape}")
    problem = label_value_problem(mask, num_classes, IGNORE_INDEX)
    if problem:
        raise ValueError(problem)
    return np.bincount(mask.reshape(-1), minlength=256)


def simulate(mask: np.ndarray, rng: np.random.Generator, num_classes: int = NUM_CLASSES,
             thickness: int = 2, min_object: int = MIN_OBJECT) -> tuple[np.ndarray, int, int]:
    """(scribble, strokes drawn, objects skipped as tiny) of one full mask (0..num_classes-1,
    255 void): the (H, W) uint8 scribble holds the class index on stroke pixels, 255 elsewhere.

    One stroke per 8-connected object of more than `min_object` px and one on the background.
    `thickness` is OpenCV's (2 draws 3 px). ValueError for a value outside 0..num_classes-1
    other than 255.
    """
    mask = np.asarray(mask)
    counts = _check_values(mask, num_classes)
    h, w = mask.shape
    out = np.full((h, w), IGNORE_INDEX, np.uint8)
    strokes = tiny = 0
    if counts[0] > min_object:   # background first, then classes in order: a fixed rng order
        bg = np.pad(mask == 0, 1)
        out[_region_stroke(bg, rng, thickness)[1:-1, 1:-1]] = 0
        strokes += 1
    for c in range(1, num_classes):
        if not counts[c]:
            continue
        n, lab, stats, _ = cv2.connectedComponentsWithStats((mask == c).astype(np.uint8),
                                                            connectivity=8)
        for k in range(1, n):
            x, y, bw, bh, area = stats[k]
            if area <= min_object:
                tiny += 1
                continue
            # the object's box with a 1-px frame: thinning and the rim see the object's edge
            y0, y1, x0, x1 = max(y - 1, 0), min(y + bh + 1, h), max(x - 1, 0), min(x + bw + 1, w)
            region = np.pad(lab[y0:y1, x0:x1] == k, 1)
            stroke = _region_stroke(region, rng, thickness)[1:-1, 1:-1]
            out[y0:y1, x0:x1][stroke] = c
            strokes += 1
    return out, strokes, tiny


def image_rng(seed: int, id_: str) -> np.random.Generator:
    """The generator of one image: depends only on (seed, id), not on workers or order."""
    return np.random.default_rng([seed, zlib.crc32(id_.encode())])


MAX_WIDTH = 255  # px: a wider stroke is no scribble (and OpenCV's limit is 32767)


def cv_thickness(width: int) -> int:
    """OpenCV thickness drawing a `width`-px line (odd widths only: 1 -> 1, 3 -> 2, 5 -> 4...)."""
    if not 1 <= width <= MAX_WIDTH or width % 2 == 0:
        raise ValueError(f"stroke width must be an odd number of pixels 1..{MAX_WIDTH}, got {width} "
                         "(OpenCV draws lines symmetric about their centre)")
    return 1 if width == 1 else width - 1


# ---------------------------------------------------------------------------------------------
# A folder

@dataclass
class SimulateStats:
    written: int = 0
    skipped_existing: int = 0
    strokes: int = 0
    tiny_objects: int = 0
    labelled_percents: list[float] = field(default_factory=list)
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        mean = float(np.mean(self.labelled_percents)) if self.labelled_percents else 0.0
        per_image = self.seconds / max(1, self.written)
        lines = [f"images written: {self.written} (existing, skipped: {self.skipped_existing})",
                 f"strokes drawn: {self.strokes}; objects skipped as tiny (<= {MIN_OBJECT} px): "
                 f"{self.tiny_objects}",
                 f"mean labelled pixels per image: {mean:.2f} %; {per_image * 1000:.0f} ms per image"]
        if self.problems:
            lines.append(f"{len(self.problems)} file(s) not written:")
            lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)


def _simulate_one(job: tuple[str, str, str, int, int, int]) -> tuple[int, int, float, float, str | None]:
    """(strokes, tiny objects, % labelled, seconds, problem) for one mask; writes only if good."""
    id_, mask_path, out_path, seed, thickness, num_classes = job
    t0 = time.perf_counter()
    try:
        mask = read_label(mask_path)
        scribble, strokes, tiny = simulate(mask, image_rng(seed, id_), num_classes, thickness)
        save_png(scribble, out_path)
    except ValueError as e:
        return 0, 0, 0.0, 0.0, f"{mask_path}: {e}"
    except OSError as e:  # utils.io messages start with the path
        return 0, 0, 0.0, 0.0, str(e)
    percent = 100.0 * float((scribble != IGNORE_INDEX).mean())
    return strokes, tiny, percent, time.perf_counter() - t0, None


def simulate_folder(masks_dir: str, out_dir: str, seed: int, ids: list[str] | None = None,
                    workers: int | None = None, thickness: int = 2, overwrite: bool = False,
                    progress: bool = True, num_classes: int = NUM_CLASSES) -> SimulateStats:
    """Scribble every masks_dir/<id>.png (all of them, or `ids`: names, datasets.layout.read_ids)
    into out_dir/<id>.png. out_dir is this tool's own folder (utils.outputs: never the masks'
    folder, never a folder or file it did not write), checked before any work."""
    if not os.path.isdir(masks_dir):
        raise DatasetError(f"{masks_dir}: mask folder not found")
    if ids is None:
        ids = sorted(n[:-4] for n in os.listdir(masks_dir) if n.lower().endswith(".png"))
        if not ids:
            raise DatasetError(f"{masks_dir}: no .png masks")
    ids = list(dict.fromkeys(ids))
    out = claim_output_dir(out_dir, TOOL, "--out", inputs=[masks_dir])
    out.claim([f"{i}.png" for i in ids])
    stats = SimulateStats()
    jobs = []
    for id_ in ids:
        out_path = out.path(f"{id_}.png")
        if not overwrite and os.path.isfile(out_path):
            stats.skipped_existing += 1
        else:
            jobs.append((id_, os.path.join(masks_dir, id_ + ".png"), out_path, seed, thickness, num_classes))
    if not jobs:
        return stats
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    results = parallel_map(_simulate_one, jobs, workers, preload=_PRELOAD)
    for strokes, tiny, percent, seconds, problem in tqdm(results, total=len(jobs), desc="scribbles",
                                                         unit="img", disable=not progress):
        if problem:
            stats.problems.append(problem)
            continue
        stats.written += 1
        stats.strokes += strokes
        stats.tiny_objects += tiny
        stats.labelled_percents.append(percent)
        stats.seconds += seconds
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m datasets.simulate_scribbles",
                                 description="Scribbles simulated from full masks (SPEC §1)")
    ap.add_argument("--masks", required=True, help="folder of <id>.png full masks (SegmentationClassAug)")
    ap.add_argument("--out", required=True, help="output folder of <id>.png scribbles")
    ap.add_argument("--seed", type=int, required=True, help="R1/R2/R3: one seed per variant (>= 0)")
    ap.add_argument("--ids", default=None, help="id list .txt (default: every PNG in --masks)")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    ap.add_argument("--width", type=int, default=3, help=f"stroke width in px, odd, 1..{MAX_WIDTH} (default 3)")
    ap.add_argument("--overwrite", action="store_true", help="redo existing outputs (default: skip)")
    ap.add_argument("--root", default=None,
                    help="dataset root whose dataset.yaml gives the classes (default: the masks "
                         "folder's parent; VOC's 21 without a description)")
    args = ap.parse_args(argv)
    if args.seed < 0:
        ap.error(f"--seed must be >= 0, got {args.seed}")
    try:
        thickness = cv_thickness(args.width)
    except ValueError as e:
        ap.error(f"--width: {e}")
    try:
        ids = read_ids(args.ids) if args.ids else None
        meta = load_meta(args.root or os.path.dirname(os.path.abspath(args.masks)))
        stats = simulate_folder(args.masks, args.out, args.seed, ids, args.workers, thickness,
                                args.overwrite, num_classes=meta.num_classes)
    except (DatasetError, OutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(stats.summary(), file=sys.stderr if stats.problems else sys.stdout)
    return 1 if stats.problems else 0


if __name__ == "__main__":
    sys.exit(main())
