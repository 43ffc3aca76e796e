"""The volume index: which 2-D slices of a dataset make up which 3-D volume, and its voxel size.

A dataset of slices cut from volumes (datasets.import_volumes writes one) names the index in its
dataset.yaml (`volumes: volumes.csv`); the file has one row per slice:

    id,case,slice,spacing_z,spacing_y,spacing_x
    patient001_frame01_slice_0,patient001_frame01,0,10,1.5625,1.5625

`slice` is the slice's position along the volume's first axis; the spacing (mm) is the voxel
size of the case, ordered (z, y, x) for the (slices, H, W) volume, and empty when unknown (then
distances are in voxels). Evaluation then scores whole volumes, the field's protocol (SPEC §10):
each case's slices are stacked in `slice` order and scored in 3-D (`score_cases`). Without an
index every image is its own case, scored in 2-D in pixel units.
"""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from datasets.meta import DatasetError, DatasetMeta, load_meta
from utils import dist
from utils.io import atomic_path
from utils.metrics import CaseTable, case_scores, scored_classes

VOLUME_INDEX = "volumes.csv"
COLUMNS = ("id", "case", "slice", "spacing_z", "spacing_y", "spacing_x")


@dataclass(frozen=True)
class Case:
    """One scored unit: a volume (its slice ids in order) or a single image."""

    name: str
    ids: tuple[str, ...]
    spacing: tuple[float, ...] | None = None   # (z, y, x) of a volume; None: voxel units


def write_index(path: str, rows: Iterable[tuple[str, str, int, Sequence[float] | None]]) -> None:
    """Write (id, case, slice, spacing (z, y, x) or None) rows, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for id_, case, z, spacing in rows:
            w.writerow([id_, case, int(z), *([f"{float(v):.6g}" for v in spacing] if spacing else ["", "", ""])])


def read_index(path: str) -> dict[str, Case]:
    """{case: Case} from an index file; DatasetError naming the file and line otherwise."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise DatasetError(f"{path}: cannot read the volume index ({e.strerror or e})") from None
    if not rows or tuple(rows[0]) != COLUMNS:
        raise DatasetError(f"{path}: a volume index starts with the header {','.join(COLUMNS)}")
    slices: dict[str, list[tuple[int, str]]] = {}
    spacing: dict[str, tuple | None] = {}
    seen: set[str] = set()
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            id_, case, z, *sp = row
            z = int(z)
            sp = tuple(float(v) for v in sp) if any(sp) else None
            if len(row) != len(COLUMNS) or (sp and not all(v > 0 and math.isfinite(v) for v in sp)):
                raise ValueError
        except ValueError:
            raise DatasetError(f"{path}, line {line}: expected id,case,slice,z,y,x spacing "
                               f"(a number > 0 or all three empty), got {','.join(row)}") from None
        if id_ in seen:
            raise DatasetError(f"{path}, line {line}: id {id_} listed twice")
        seen.add(id_)
        if case in spacing and spacing[case] != sp:
            raise DatasetError(f"{path}, line {line}: case {case} has two different spacings")
        spacing[case] = sp
        slices.setdefault(case, []).append((z, id_))
    out = {}
    for case, zs in slices.items():
        zs.sort()
        if len({z for z, _ in zs}) != len(zs):
            raise DatasetError(f"{path}: case {case} lists a slice position twice")
        out[case] = Case(case, tuple(i for _, i in zs), spacing[case])
    return out


def index_path(root: str, meta: DatasetMeta | None = None) -> str | None:
    """<root>/<the description's `volumes`>, or None when the dataset has no volume index."""
    meta = meta or load_meta(root)
    return os.path.join(root, meta.volumes) if meta.volumes else None


def cases_of(root: str, ids: Sequence[str], meta: DatasetMeta | None = None) -> list[Case]:
    """The cases a split's ids form: its volumes (in index order) when the dataset has a volume
    index, else one case per image. A volume must be listed whole: whole-volume scores of a
    partial stack would not be the volume's (DatasetError naming the case)."""
    path = index_path(root, meta)
    if path is None:
        return [Case(i, (i,)) for i in dict.fromkeys(ids)]
    volumes = read_index(path)
    of_id = {i: c for c in volumes.values() for i in c.ids}
    missing = [i for i in ids if i not in of_id]
    if missing:
        raise DatasetError(f"{path}: no volume for id {missing[0]}"
                           + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    wanted = set(ids)
    cases = []
    for case in dict.fromkeys(of_id[i].name for i in ids):
        vol = volumes[case]
        absent = [i for i in vol.ids if i not in wanted]
        if absent:
            raise DatasetError(f"{path}: the split lists {len(vol.ids) - len(absent)} of the {len(vol.ids)} "
                               f"slices of {case} (not {absent[0]}); whole-volume scores need them all")
        cases.append(vol)
    return cases


def score_cases(cases: Sequence[Case], read: Callable[[str], tuple[np.ndarray, np.ndarray]],
                meta: DatasetMeta, progress: bool = False, sharded: bool = False) -> CaseTable:
    """The description's per-case metrics (utils.metrics) over `cases`, one case in memory at a
    time: each case's (prediction, truth) pairs (`read(id)`) stacked into a volume, scored in 3-D
    with its spacing (2-D, pixel units, for single images). `sharded` (under torchrun, every rank
    calls it): each rank scores its share of the cases and every rank gets all the rows, in case
    order (no rank idles in a collective while one scores them all: NCCL's timeout is 10 min)."""
    known = bool(cases) and all(c.spacing for c in cases)  # one unit for the whole table
    table = CaseTable(meta.classes, scored_classes(meta.num_classes, meta.background),
                      meta.metrics or ("dice", "hd95", "assd"), "mm" if known else "px")
    mine = cases[dist.rank()::dist.world_size()] if sharded else cases
    for case in tqdm(mine, desc="scoring cases", unit="case", disable=not progress):
        pairs = [read(i) for i in case.ids]
        pred, truth = np.stack([p for p, _ in pairs]), np.stack([t for _, t in pairs])
        spacing = case.spacing if known else None
        if len(case.ids) == 1:  # an image, or a one-slice volume: 2-D, in-plane spacing
            pred, truth, spacing = pred[0], truth[0], spacing and spacing[1:]
        table.add(case.name, case_scores(pred, truth, table.classes, spacing, meta.ignore_index))
    if sharded:
        order = {c.name: i for i, c in enumerate(cases)}
        table.rows = sorted((r for rows in dist.all_gather_object(table.rows) for r in rows), key=lambda r: order[r[0]])
    return table
