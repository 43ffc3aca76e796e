"""Import 3-D volumes with scribbles into the dataset layout (SPEC §1, §10): 2-D slices as 8-bit
PNGs, dataset.yaml, splits by case (k folds) and a volume index for whole-volume scoring.

    # WSL4MIS's ACDC (git clone https://github.com/HiLab-git/WSL4MIS): its ACDC_training_volumes/*.h5
    python -m datasets.import_volumes --wsl4mis WSL4MIS/data/ACDC --out dataset/ACDC --folds 5 --fold 1

    # NIfTI volumes: an image and, optionally, a dense label and a scribble per case, matched by
    # a naming rule ({case} is the case name, * any part of a file or folder name)
    python -m datasets.import_volumes --nifti DIR --images '*/{case}.nii.gz' \\
        --labels '*/{case}_gt.nii.gz' --scribbles '*/{case}_scribble.nii.gz' --unlabelled 4 \\
        --classes background RV Myo LV --group 'patient\\d+' --out dataset/mine

What it writes under --out (a folder it creates and owns, utils.outputs):
    JPEGImages/<case>_slice_<z>.png            8-bit grey slice z (mode L)
    SegmentationClassAug/<case>_slice_<z>.png  dense label 0..C-1 (if labels are given)
    pascal_2012_scribble/<case>_slice_<z>.png  scribble 0..C-1, 255 = unlabelled (if given)
    ImageSets/SegmentationAug/{train,val}.txt  fold --fold; train_fold<k>.txt / val_fold<k>.txt: every fold
    volumes.csv                                the volume index (datasets.volumes): case, slice, spacing
    dataset.yaml                               classes, mean/std, metrics [dice, hd95, assd], volumes
    import_progress.jsonl                      one line per finished case (resuming skips them)

Slices: a volume (Z, H, W) is cut along its first axis, WSL4MIS's convention (its h5 files are
SimpleITK arrays, (z, y, x)); a NIfTI array (x, y, z) is read the same way, slice z = arr[:, :, z].T,
spacing (z, y, x) from the header. WSL4MIS's h5 files carry no spacing (SPEC §10): distances are
then in voxels, unless --spacing_from names a folder holding the original ACDC
<case>.nii.gz files, whose headers give it.

Intensity, stated and reproducible: a volume is scaled to 0..1 by WSL4MIS's rule -- clipped at
its --clip_percentile (99) intensity percentile (numpy's inverted_cdf: the smallest value with
at least 99 % of the voxels at or below it, which is what WSL4MIS's skimage cumulative_distribution
gives for integer-valued images), then min-max scaled -- and stored as round(255 * x). WSL4MIS's
h5 images are already scaled that way: they are only stored as round(255 * x).

Folds are by group (a patient: --group takes the group from the case name; WSL4MIS: patientNNN):
the sorted groups cut into --folds contiguous blocks (numpy.array_split), fold k validating
block k. For ACDC's 100 patients this is WSL4MIS's split: fold k validates patients
20(k-1)+1 .. 20k. Failed cases keep their place (the folds of the others do not move).

One volume in memory at a time; every file written atomically; a case counts as imported once
its line is in import_progress.jsonl, so a stopped import continues where it stopped. An
unreadable file, an image / label / scribble shape mismatch, or a value that is no class is
named per case; the other cases are imported and the exit is 1.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from datasets.layout import DEFAULT_FOLDERS, IGNORE_INDEX, SPLIT_DIR
from datasets.meta import META_FILE, DatasetError, DatasetMeta, MetaError, write_meta
from datasets.volumes import VOLUME_INDEX, write_index
from utils.io import OutputError, atomic_path, report_failures, save_png
from utils.outputs import claim_output_dir

TOOL = "import_volumes"
PROGRESS = "import_progress.jsonl"
ACDC_CLASSES = ("background", "RV", "Myo", "LV")   # WSL4MIS's label values 0..3 (SPEC §10)
WSL4MIS_UNLABELLED = 4
WSL4MIS_GROUP = r"patient\d+"
IMAGE, MASK, SCRIBBLE = DEFAULT_FOLDERS["image"], DEFAULT_FOLDERS["mask"], DEFAULT_FOLDERS["scribble"]


class CaseError(DatasetError):
    """One case cannot be imported; the message names its file and the problem."""


@dataclass
class Volume:
    image: np.ndarray                 # (Z, H, W) float, already 0..1 when `scaled`
    label: np.ndarray | None          # (Z, H, W) integer class values
    scribble: np.ndarray | None       # (Z, H, W) integer class values or the unlabelled value
    spacing: tuple[float, float, float] | None   # (z, y, x), mm
    scaled: bool = False


# ----------------------------------------------------------------------------- intensity
def clip_percentile(volume: np.ndarray, percentile: float) -> float:
    """The smallest intensity with at least `percentile` % of the voxels at or below it."""
    return float(np.percentile(volume, percentile, method="inverted_cdf"))


def scale_intensity(volume: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """WSL4MIS's per-volume scaling: clip at the percentile, then min-max to 0..1 (float64)."""
    v = np.asarray(volume, np.float64)
    lo, hi = float(v.min()), clip_percentile(v, percentile) if percentile < 100 else float(v.max())
    if hi <= lo:
        return np.zeros(v.shape)
    return (np.clip(v, lo, hi) - lo) / (hi - lo)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """0..1 -> round(255 * x) as uint8 (values outside 0..1 clipped first)."""
    return np.floor(np.clip(np.asarray(x, np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------- sources
def _h5(path: str, keys: Sequence[str]) -> dict:
    import h5py
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in keys if k not in f]
            if missing:
                raise CaseError(f"{path}: no dataset {missing[0]!r} (has {', '.join(sorted(f.keys()))})")
            return {k: f[k][()] for k in keys}
    except CaseError:
        raise
    except Exception as e:  # h5py raises OSError, KeyError, ValueError for broken files
        raise CaseError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from None


def _nifti(path: str, header_only: bool = False):
    """(array (Z, H, W) or None, spacing (z, y, x)) of a 3-D NIfTI file."""
    import nibabel as nib
    try:
        img = nib.load(path)
        shape, zooms = img.shape, img.header.get_zooms()
        if len(shape) != 3:
            raise CaseError(f"{path}: a 3-D volume is needed, this one has shape {tuple(shape)}")
        spacing = (float(zooms[2]), float(zooms[1]), float(zooms[0]))
        if header_only:
            return None, spacing
        data = np.asanyarray(img.dataobj)
    except CaseError:
        raise
    except Exception as e:  # nibabel raises ImageFileError, OSError, EOFError, zlib errors ...
        raise CaseError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from None
    return np.ascontiguousarray(np.transpose(data, (2, 1, 0))), spacing


def _pattern(pattern: str, case: str | None = None) -> re.Pattern:
    """A naming rule as a regex over '/'-separated relative paths: {case} the case name (or the
    given one), * any part of one file or folder name."""
    if pattern.count("{case}") != 1:
        raise ValueError(f"naming rule {pattern!r}: must hold {{case}} exactly once")
    parts = [re.escape(p).replace(r"\*", "[^/]*") for p in pattern.split("{case}")]
    middle = re.escape(case) if case is not None else "(?P<case>[^/]+?)"
    return re.compile(parts[0] + middle + parts[1])


def _files(folder: str) -> list[str]:
    out = []
    for d, dirs, names in os.walk(folder):
        dirs.sort()
        rel = os.path.relpath(d, folder)
        out += [n if rel == "." else f"{rel}/{n}".replace(os.sep, "/") for n in sorted(names)]
    return out


class Source:
    """The cases of an import, each loadable on its own (one volume in memory at a time)."""

    kind = ""

    def cases(self) -> list[str]:
        raise NotImplementedError

    def load(self, case: str) -> Volume:
        raise NotImplementedError

    def describe(self) -> dict:
        raise NotImplementedError


class WSL4MISSource(Source):
    """<root>/ACDC_training_volumes/<case>.h5 (image 0..1, label, scribble with 4 = unlabelled).
    Where <root>/ACDC_training_slices/ exists, every slice file of a case must equal the volume's
    slice (WSL4MIS trains on those files; they are the same data)."""

    kind = "wsl4mis"

    def __init__(self, root: str, spacing_from: str | None = None):
        self.root = root
        self.volumes = os.path.join(root, "ACDC_training_volumes")
        self.slices = os.path.join(root, "ACDC_training_slices")
        if not os.path.isdir(self.volumes):
            raise DatasetError(f"--wsl4mis {root}: no ACDC_training_volumes/ folder (expected WSL4MIS/data/ACDC)")
        self.spacing_from = spacing_from
        self._nii = None
        if spacing_from:
            if not os.path.isdir(spacing_from):
                raise DatasetError(f"--spacing_from {spacing_from}: folder not found")
            self._nii = {os.path.basename(p)[:-len(".nii.gz")]: os.path.join(spacing_from, p)
                         for p in _files(spacing_from) if p.endswith(".nii.gz")}

    def cases(self) -> list[str]:
        cases = sorted(n[:-3] for n in os.listdir(self.volumes) if n.endswith(".h5") and not n.startswith("."))
        if not cases:
            raise DatasetError(f"{self.volumes}: no .h5 volumes")
        return cases

    def load(self, case: str) -> Volume:
        path = os.path.join(self.volumes, case + ".h5")
        d = _h5(path, ("image", "label", "scribble"))
        if os.path.isdir(self.slices):
            for z in range(len(d["image"])):
                sl = os.path.join(self.slices, f"{case}_slice_{z}.h5")
                if not os.path.exists(sl):
                    continue
                s = _h5(sl, ("image", "label", "scribble"))
                bad = [k for k in s if not np.array_equal(s[k], d[k][z])]
                if bad:
                    raise CaseError(f"{sl}: {bad[0]} differs from slice {z} of {path}")
        spacing = None
        if self._nii is not None:
            if case not in self._nii:
                raise CaseError(f"--spacing_from {self.spacing_from}: no {case}.nii.gz for {path}")
            spacing = _nifti(self._nii[case], header_only=True)[1]
        return Volume(d["image"], d["label"], d["scribble"], spacing, scaled=True)

    def describe(self) -> dict:
        return {"wsl4mis": os.path.abspath(self.root), "spacing_from": self.spacing_from}


class NiftiSource(Source):
    """NIfTI files under a folder, matched per case by naming rules."""

    kind = "nifti"

    def __init__(self, root: str, images: str, labels: str | None, scribbles: str | None,
                 case_regex: str | None = None):
        if not os.path.isdir(root):
            raise DatasetError(f"--nifti {root}: folder not found")
        self.root, self.rules = root, {"image": images, "label": labels, "scribble": scribbles}
        self.case_regex = case_regex
        self.files = _files(root)

    def cases(self) -> list[str]:
        rule = _pattern(self.rules["image"])
        others = [_pattern(r) for k, r in self.rules.items() if r and k != "image"]
        keep = re.compile(self.case_regex) if self.case_regex else None
        cases = {}
        for rel in self.files:
            m = rule.fullmatch(rel)
            if m and not any(o.fullmatch(rel) for o in others) and (keep is None or keep.fullmatch(m["case"])):
                if m["case"] in cases:
                    raise DatasetError(f"--images {self.rules['image']}: case {m['case']} matches both "
                                       f"{cases[m['case']]} and {rel}")
                cases[m["case"]] = rel
        if not cases:
            raise DatasetError(f"--nifti {self.root}: no file matches --images {self.rules['image']!r}")
        return sorted(cases)

    def _file(self, what: str, case: str) -> str:
        rule = _pattern(self.rules[what], case)
        found = [rel for rel in self.files if rule.fullmatch(rel)]
        if len(found) != 1:
            raise CaseError(f"{os.path.join(self.root, self.rules[what].replace('{case}', case))}: "
                            + (f"no {what} file for case {case}" if not found
                               else f"{len(found)} {what} files match for case {case} ({', '.join(found[:3])})"))
        return os.path.join(self.root, found[0])

    def load(self, case: str) -> Volume:
        image, spacing = _nifti(self._file("image", case))
        if not np.issubdtype(image.dtype, np.number) or not np.isfinite(image).all():
            raise CaseError(f"{self._file('image', case)}: the image has non-finite values")
        out = {}
        for what in ("label", "scribble"):
            out[what] = _nifti(self._file(what, case))[0] if self.rules[what] else None
        return Volume(image, out["label"], out["scribble"], spacing)

    def describe(self) -> dict:
        return {"nifti": os.path.abspath(self.root), **{f"rule_{k}": v for k, v in self.rules.items()},
                "case_regex": self.case_regex}


# ----------------------------------------------------------------------------- folds
def group_of(case: str, regex: str | None) -> str:
    """The fold group of a case: the first match of `regex` in its name (its first group if it
    has one); the case itself without a regex."""
    if not regex:
        return case
    m = re.search(regex, case)
    if m is None:
        raise DatasetError(f"--group {regex!r}: no match in case name {case}")
    return m.group(1) if m.groups() else m.group(0)


def fold_groups(groups: Sequence[str], folds: int) -> list[list[str]]:
    """The sorted distinct groups cut into `folds` contiguous blocks (numpy.array_split sizes)."""
    ordered = sorted(set(groups))
    if not 1 <= folds <= len(ordered):
        raise ValueError(f"--folds {folds}: must be 1..{len(ordered)} (the number of groups)")
    bounds = np.cumsum([0] + [len(b) for b in np.array_split(np.arange(len(ordered)), folds)])
    return [ordered[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


# ----------------------------------------------------------------------------- one case
def _integer_volume(array: np.ndarray, path_hint: str, what: str) -> np.ndarray:
    a = np.asarray(array)
    if not np.issubdtype(a.dtype, np.integer):
        if not np.isfinite(a).all() or not np.array_equal(a, np.round(a)):
            raise CaseError(f"{path_hint}: the {what} holds non-integer values")
        a = np.round(a)
    return a.astype(np.int64)


def convert_case(vol: Volume, case: str, num_classes: int, unlabelled: int, percentile: float):
    """(image uint8, label uint8 | None, scribble uint8 | None) volumes of one case, checked:
    shapes equal, labels 0..C-1, scribbles 0..C-1 or `unlabelled` (-> 255)."""
    if vol.image.ndim != 3 or min(vol.image.shape) < 1:
        raise CaseError(f"{case}: the image is not a 3-D volume (shape {tuple(vol.image.shape)})")
    image = to_uint8(vol.image if vol.scaled else scale_intensity(vol.image, percentile))
    out = [image]
    for what, arr in (("label", vol.label), ("scribble", vol.scribble)):
        if arr is None:
            out.append(None)
            continue
        if arr.shape != image.shape:
            raise CaseError(f"{case}: the {what} has shape {tuple(arr.shape)}, the image {tuple(image.shape)}")
        a = _integer_volume(arr, case, what)
        allowed = (a >= 0) & (a < num_classes)
        if what == "scribble":
            allowed |= a == unlabelled
        if not allowed.all():
            bad = np.unique(a[~allowed])[:5].tolist()
            extra = f" or {unlabelled} (unlabelled)" if what == "scribble" else ""
            raise CaseError(f"{case}: the {what} holds value(s) {bad}; allowed 0..{num_classes - 1}{extra}")
        if what == "scribble":
            a = np.where(a == unlabelled, IGNORE_INDEX, a)
        out.append(a.astype(np.uint8))
    return tuple(out)


def slice_id(case: str, z: int) -> str:
    return f"{case}_slice_{z}"  # WSL4MIS's slice file names


# ----------------------------------------------------------------------------- the import
def _read_progress(path: str, settings: dict) -> dict[str, dict]:
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    try:
        head = json.loads(lines[0]) if lines else None
    except ValueError:
        head = None
    if head != {"settings": settings}:
        raise OutputError(f"{path}: an import with other settings wrote this folder; choose another --out "
                          f"(or delete the folder to start over)")
    done = {}
    for line in lines[1:]:
        try:
            rec = json.loads(line)
            done[rec["case"]] = rec
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill: that case is imported again
    return done


def _intensity_note(settings: dict) -> str:
    """dataset.yaml's comment: how the slices' intensities were made, and what mean / std are."""
    how = ("WSL4MIS's h5 images (already clipped at each volume's 99th percentile, min-max "
           "scaled to 0..1) stored as round(255 * x)" if settings["source"]["kind"] == "wsl4mis" else
           f"each volume clipped at its {settings['clip_percentile']}th intensity percentile "
           f"(numpy inverted_cdf), min-max scaled to 0..1, stored as round(255 * x)")
    return (f"written by python -m datasets.import_volumes\nintensity: {how}\n"
            f"mean / std: of the imported slices (grey: the same for R, G, B; no labels used);\n"
            f"delete both lines to normalise with ImageNet's instead")


def import_volumes(source: Source, out: str, classes: Sequence[str], folds: int = 5, fold: int = 1,
                   group: str | None = None, unlabelled: int = IGNORE_INDEX, percentile: float = 99.0,
                   progress: bool = True) -> dict:
    """Import every case of `source` into `out` (module docstring). Returns {"cases": imported,
    "failed": [message per case], "slices", "splits": {name: ids}}; raises DatasetError /
    OutputError / ValueError before any work for bad arguments or an output it does not own."""
    meta = DatasetMeta.from_dict({"classes": list(classes)}, "--classes")  # the checks of dataset.yaml
    if not 1 <= fold <= folds:
        raise ValueError(f"--fold {fold}: must be 1..{folds} (--folds {folds})")
    if not 0 < percentile <= 100:
        raise ValueError(f"--clip_percentile {percentile}: must be in (0, 100]")
    cases = source.cases()
    groups = {c: group_of(c, group) for c in cases}
    blocks = fold_groups(list(groups.values()), folds)
    outdir = claim_output_dir(out, TOOL, "--out", inputs=[getattr(source, "root", None)])
    settings = {"source": {"kind": source.kind, **source.describe()}, "classes": list(meta.classes),
                "unlabelled": unlabelled, "clip_percentile": percentile, "group": group}
    outdir.claim([PROGRESS])
    done = _read_progress(outdir.path(PROGRESS), settings)
    if not os.path.isfile(outdir.path(PROGRESS)):
        with atomic_path(outdir.path(PROGRESS)) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps({"settings": settings}) + "\n")
    failed = []
    todo = [c for c in cases if c not in done]
    bar = tqdm(todo, desc="importing volumes", unit="case", disable=not progress)
    bar.set_postfix(done_before=len(done))
    for case in bar:
        try:
            vol = source.load(case)
            image, label, scribble = convert_case(vol, case, meta.num_classes, unlabelled, percentile)
        except CaseError as e:
            failed.append(str(e))
            tqdm.write(f"error: {e}", file=sys.stderr)
            continue
        ids = [slice_id(case, z) for z in range(len(image))]
        fields = [(IMAGE, image), (MASK, label), (SCRIBBLE, scribble)]
        names = [f"{folder}/{i}.png" for folder, arr in fields if arr is not None for i in ids]
        outdir.claim(names)
        for folder, arr in fields:
            if arr is None:
                continue
            for z, id_ in enumerate(ids):
                save_png(arr[z], outdir.path(f"{folder}/{id_}.png"),
                         palette=False if folder == IMAGE else meta.palette_array())
        x = image.astype(np.float64) / 255.0
        rec = {"case": case, "ids": ids, "shape": list(image.shape), "spacing": list(vol.spacing) if vol.spacing else None,
               "label": label is not None, "scribble": scribble is not None,
               "sum": float(x.sum()), "sumsq": float((x * x).sum()), "pixels": int(x.size)}
        with open(outdir.path(PROGRESS), "a", encoding="utf-8") as f:  # the case is done once this line is
            f.write(json.dumps(rec) + "\n")
        done[case] = rec
    bar.close()
    return finish(outdir, cases, done, blocks, groups, fold, meta, settings, failed)


def finish(outdir, cases, done, blocks, groups, fold, meta, settings, failed) -> dict:
    """The index, the splits and dataset.yaml from the finished cases (written last, atomically)."""
    imported = [c for c in cases if c in done]
    if not imported:
        raise DatasetError("no case could be imported:\n  " + "\n  ".join(failed))
    labelled = all(done[c]["label"] for c in imported)
    splits = {}
    for k, block in enumerate(blocks, start=1):
        val_groups = set(block)
        for name, keep in (("train", lambda c: groups[c] not in val_groups), ("val", lambda c: groups[c] in val_groups)):
            splits[f"{name}_fold{k}"] = [i for c in imported if keep(c) for i in done[c]["ids"]]
    splits["train"], splits["val"] = splits[f"train_fold{fold}"], splits[f"val_fold{fold}"]
    names = [VOLUME_INDEX, META_FILE] + [f"{SPLIT_DIR}/{s}.txt" for s in splits]
    outdir.claim([n.replace(os.sep, "/") for n in names])
    for name, ids in splits.items():
        with atomic_path(outdir.path(f"{SPLIT_DIR}/{name}.txt".replace(os.sep, "/"))) as tmp, \
                open(tmp, "w", encoding="utf-8") as f:
            f.write("".join(i + "\n" for i in ids))
    write_index(outdir.path(VOLUME_INDEX), [(i, c, z, done[c]["spacing"]) for c in imported
                                            for z, i in enumerate(done[c]["ids"])])
    n = sum(done[c]["pixels"] for c in imported)
    mean = sum(done[c]["sum"] for c in imported) / n
    std = max(sum(done[c]["sumsq"] for c in imported) / n - mean * mean, 0.0) ** 0.5
    description = {"classes": list(meta.classes), "background": 0, "ignore_index": IGNORE_INDEX,
                   "image_suffix": ".png", "splits_dir": SPLIT_DIR.replace(os.sep, "/"),
                   "mean": [round(mean, 6)] * 3, "std": [round(max(std, 1e-6), 6)] * 3,
                   "metrics": ["dice", "hd95", "assd"], "volumes": VOLUME_INDEX}
    write_meta(outdir.path(META_FILE), description, _intensity_note(settings))
    return {"cases": len(imported), "failed": failed, "slices": sum(len(done[c]["ids"]) for c in imported),
            "splits": splits, "labelled": labelled, "spacing": all(done[c]["spacing"] for c in imported)}


# ----------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m datasets.import_volumes", description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--wsl4mis", metavar="DIR", help="WSL4MIS's data/ACDC folder (holds ACDC_training_volumes/)")
    src.add_argument("--nifti", metavar="DIR", help="a folder of NIfTI volumes (with --images ...)")
    ap.add_argument("--out", required=True, help="the dataset root to create")
    ap.add_argument("--images", help="NIfTI: naming rule of the images, e.g. '{case}.nii.gz' or '*/{case}.nii.gz'")
    ap.add_argument("--labels", help="NIfTI: naming rule of the dense labels (optional), e.g. '{case}_gt.nii.gz'")
    ap.add_argument("--scribbles", help="NIfTI: naming rule of the scribbles (optional)")
    ap.add_argument("--unlabelled", type=int, default=None,
                    help=f"the scribbles' unlabelled value (NIfTI default {IGNORE_INDEX}; WSL4MIS: {WSL4MIS_UNLABELLED})")
    ap.add_argument("--classes", nargs="+", default=None,
                    help=f"class names, index = label value (WSL4MIS default: {' '.join(ACDC_CLASSES)})")
    ap.add_argument("--case_regex", default=None, help="NIfTI: import only cases whose name matches this")
    ap.add_argument("--group", default=None,
                    help=f"regex taking a case's fold group (patient) from its name (WSL4MIS: {WSL4MIS_GROUP!r}; "
                         "default: the case itself)")
    ap.add_argument("--folds", type=int, default=5, help="folds over the groups (WSL4MIS: 5)")
    ap.add_argument("--fold", type=int, default=1, help="the fold train.txt / val.txt hold (1..folds)")
    ap.add_argument("--clip_percentile", type=float, default=99.0,
                    help="NIfTI: intensity percentile each volume is clipped at before min-max (100: none)")
    ap.add_argument("--spacing_from", metavar="DIR",
                    help="WSL4MIS: a folder with the original ACDC <case>.nii.gz files, for the voxel spacing")
    args = ap.parse_args(argv)
    try:
        if args.wsl4mis:
            for flag in ("images", "labels", "scribbles", "case_regex"):
                if getattr(args, flag):
                    ap.error(f"--{flag} is for --nifti")
            source = WSL4MISSource(args.wsl4mis, args.spacing_from)
            unlabelled = WSL4MIS_UNLABELLED if args.unlabelled is None else args.unlabelled
            classes, group = args.classes or ACDC_CLASSES, args.group or WSL4MIS_GROUP
        else:
            if not args.images:
                ap.error("--nifti needs --images (the naming rule of the image files)")
            if not args.classes:
                ap.error("--nifti needs --classes (the class names, index = label value)")
            if args.spacing_from:
                ap.error("--spacing_from is for --wsl4mis (NIfTI headers give the spacing)")
            for flag in ("images", "labels", "scribbles"):
                if getattr(args, flag):
                    _pattern(getattr(args, flag))
            source = NiftiSource(args.nifti, args.images, args.labels, args.scribbles, args.case_regex)
            unlabelled = IGNORE_INDEX if args.unlabelled is None else args.unlabelled
            classes, group = args.classes, args.group
        result = import_volumes(source, args.out, classes, args.folds, args.fold, group, unlabelled,
                                args.clip_percentile)
    except (DatasetError, MetaError, OutputError, ValueError, re.error) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the finished cases are kept; run the same command again to continue", file=sys.stderr)
        return 130
    s = result["splits"]
    print(f"{result['cases']} case(s), {result['slices']} slices in {args.out}: fold {args.fold} of {args.folds}: "
          f"train {len(s['train'])} / val {len(s['val'])} slices; volume index {VOLUME_INDEX} "
          f"(spacing {'from the headers, mm' if result['spacing'] else 'unknown: distances in voxels'})")
    return report_failures(result["failed"], "case(s) not imported (the others are)")


if __name__ == "__main__":
    sys.exit(main())
