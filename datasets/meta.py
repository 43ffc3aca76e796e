"""What a dataset's labels mean, as data: class names, palette, background, ignore value, image
suffix, where the id lists are. Read from an optional `<root>/dataset.yaml`:

    classes: [background, left_ventricle, myocardium, right_ventricle]   # index = label value
    palette: [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]        # optional
    background: 0          # the class SPEC's foreground/background rules use (null: none)
    ignore_index: 255      # the only value supported (every tool ignores 255)
    image_suffix: .png
    splits_dir: ImageSets/SegmentationAug
    mean: [0.485, 0.456, 0.406]   # RGB, 0..1 scale: what every transform normalises with
    std: [0.229, 0.224, 0.225]    # (default ImageNet's, which the pretrained backbones expect)
    metrics: [dice, hd95, assd]   # per-case scores eval.py / score_labels add to mIoU (utils.metrics)
    volumes: volumes.csv          # a volume index: cases are whole volumes (datasets.volumes)

Every key but `classes` is optional; without the file the VOC / ScribbleSup values apply
(`VOC_META`). Checkpoints store `to_dict()` under "dataset_meta", so inference needs no dataset.
A set without a background class (`background: null`) trains with partial CE and pseudo CE;
LoRM, D_s, D_c and the CAM stage are defined by foreground vs background (SPEC §2-4): they
refuse it with a message naming the options (`require_background`).
"""
from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass

import numpy as np

from utils.palette import voc_palette

META_FILE = "dataset.yaml"
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
    "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
    "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
_KEYS = ("classes", "palette", "background", "ignore_index", "image_suffix", "splits_dir", "mean", "std",
         "metrics", "volumes")
IMAGENET_MEAN = (0.485, 0.456, 0.406)   # RGB, 0..1 scale: the default normalisation
IMAGENET_STD = (0.229, 0.224, 0.225)
CASE_METRICS = ("dice", "hd95", "assd")  # what `metrics` may name (utils.metrics.case_scores)


class DatasetError(RuntimeError):
    """A problem with the data on disk; the message names the file and the problem.
    (Defined here, the lowest datasets module; datasets.layout re-exports it.)"""


class MetaError(DatasetError, ValueError):
    """A dataset.yaml (or a checkpoint's dataset_meta) that cannot be used; names the file.
    Both a DatasetError and a ValueError: every CLI's one-line handler catches it."""


@dataclass(frozen=True)
class DatasetMeta:
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    background: int | None = 0
    ignore_index: int = 255
    image_suffix: str = ".jpg"
    splits_dir: str = os.path.join("ImageSets", "SegmentationAug")
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    metrics: tuple[str, ...] = ()     # per-case metrics besides mIoU (CASE_METRICS)
    volumes: str | None = None        # the volume index, relative to the root
    source: str = "VOC defaults"  # where it was read from, for messages

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def preview(self, n: int = 6) -> str:
        """The first `n` class names, for messages: "background, a, b, ..."."""
        return ", ".join(self.classes[:n]) + (", ..." if self.num_classes > n else "")

    def palette_array(self) -> np.ndarray:
        """(256, 3) uint8 for mode-P PNGs: the classes' colours, VOC's for every other value
        (so 255 stays VOC's cream)."""
        pal = voc_palette()
        pal[: len(self.palette)] = np.asarray(self.palette, np.uint8).reshape(-1, 3)
        return pal

    def colorize(self, label: np.ndarray) -> np.ndarray:
        """(H, W) class indices -> (H, W, 3) uint8 RGB in this dataset's colours."""
        return self.palette_array()[np.asarray(label, dtype=np.uint8)]

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("source")
        d["classes"], d["palette"] = list(self.classes), [list(c) for c in self.palette]
        d["mean"], d["std"], d["metrics"] = list(self.mean), list(self.std), list(self.metrics)
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str) -> "DatasetMeta":
        """Validated; MetaError naming `source` and the key otherwise."""
        if not isinstance(d, dict):
            raise MetaError(f"{source}: expected a mapping of {', '.join(_KEYS)}, got {type(d).__name__}")
        unknown = sorted(set(d) - set(_KEYS), key=str)  # keys may be numbers: never compare mixed types
        if unknown:
            raise MetaError(f"{source}: unknown key(s) {unknown}; known: {', '.join(_KEYS)}")
        classes = d.get("classes")
        if not isinstance(classes, (list, tuple)) or not classes \
                or not all(isinstance(c, str) and c.strip() for c in classes):
            raise MetaError(f"{source}: 'classes' must be a non-empty list of names (index = label value)")
        if len(set(classes)) != len(classes):
            raise MetaError(f"{source}: 'classes' has repeated names")
        ignore = d.get("ignore_index", 255)
        if not isinstance(ignore, int) or isinstance(ignore, bool) or ignore != 255:
            # every consumer (losses, metrics, maps, converters) treats 255 as "unlabelled": a
            # different value would be read here and ignored everywhere else
            raise MetaError(f"{source}: 'ignore_index' {ignore!r} is not supported: every tool treats "
                            f"255 as the unlabelled / ignored value; remap that value to 255 in your "
                            f"labels and drop the key (or write ignore_index: 255)")
        if len(classes) > 255:  # labels are uint8 PNGs, 0..C-1 below the ignore value
            raise MetaError(f"{source}: {len(classes)} classes do not fit below ignore_index 255")
        background = d.get("background", 0)
        if background is not None and (not isinstance(background, int) or not 0 <= background < len(classes)):
            raise MetaError(f"{source}: 'background' must be a class index 0..{len(classes) - 1} or null, "
                            f"got {background!r}")
        if background not in (None, 0):
            raise MetaError(f"{source}: 'background' must be 0 (or null): SPEC's foreground is label > 0; "
                            f"reorder 'classes' so the background comes first")
        palette = d.get("palette")
        if palette is None:
            palette = [tuple(int(v) for v in c) for c in voc_palette(len(classes))]
        elif not isinstance(palette, (list, tuple)) or len(palette) != len(classes) or not all(
                isinstance(c, (list, tuple)) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
                for c in palette):
            raise MetaError(f"{source}: 'palette' must list one [r, g, b] (0..255) per class "
                            f"({len(classes)} classes)")
        suffix = d.get("image_suffix", ".jpg")
        if not isinstance(suffix, str) or not suffix.startswith(".") or len(suffix) < 2:
            raise MetaError(f"{source}: 'image_suffix' must look like '.png', got {suffix!r}")
        splits = d.get("splits_dir", os.path.join("ImageSets", "SegmentationAug"))
        if not isinstance(splits, str) or not splits or os.path.isabs(splits):
            raise MetaError(f"{source}: 'splits_dir' must be a folder relative to the root, got {splits!r}")
        mean, std = (_triple(d.get(k, default), k, source, positive=k == "std")
                     for k, default in (("mean", IMAGENET_MEAN), ("std", IMAGENET_STD)))
        metrics = d.get("metrics") or []
        if not isinstance(metrics, (list, tuple)) or not all(m in CASE_METRICS for m in metrics):
            raise MetaError(f"{source}: 'metrics' must list some of {', '.join(CASE_METRICS)}, got {metrics!r}")
        volumes = d.get("volumes")
        if volumes is not None and (not isinstance(volumes, str) or not volumes or os.path.isabs(volumes)):
            raise MetaError(f"{source}: 'volumes' must be a file relative to the root, got {volumes!r}")
        return cls(tuple(classes), tuple(tuple(int(v) for v in c) for c in palette), background, ignore,
                   suffix, splits, mean, std, tuple(dict.fromkeys(metrics)), volumes, source)

    def require_background(self, what: str) -> None:
        """MetaError unless the set has a background class (LoRM, D_c and the CAM stage need one)."""
        if self.background is None:
            raise MetaError(f"{self.source}: no background class (background: null), but one is needed "
                            f"by {what}. Options: add a background class at index 0, or train "
                            f"with partial CE and pseudo CE only (--l_lorm 0 --l_ds 0 --l_dc 0, "
                            f"pseudo-labels from elsewhere)")


def write_meta(path: str, description: dict, comment: str = "") -> None:
    """dataset.yaml as the tools that make a dataset write it, atomically: `comment` as '#' lines,
    then one key a line, values as JSON (which is YAML). It must read back (from_dict)."""
    import json
    from utils.io import atomic_path
    DatasetMeta.from_dict(description, f"the description for {path}")
    lines = [f"# {line}" for line in comment.splitlines()]
    lines += [f"{key}: {json.dumps(value)}" for key, value in description.items()]
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def _triple(value, key: str, source: str, positive: bool) -> tuple[float, float, float]:
    """mean / std: one number per RGB channel on the 0..1 scale (a grey set repeats its value)."""
    ok = isinstance(value, (list, tuple)) and len(value) == 3 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and (v > 0 if positive else 0 <= v <= 1)
        for v in value)
    if not ok:
        raise MetaError(f"{source}: '{key}' must be three numbers (R, G, B) on the 0..1 scale"
                        f"{', each > 0' if positive else ''}, got {value!r}")
    return tuple(float(v) for v in value)


VOC_META = DatasetMeta(VOC_CLASSES, tuple(tuple(int(v) for v in c) for c in voc_palette(len(VOC_CLASSES))))


def meta_path(root: str) -> str:
    return os.path.join(root, META_FILE)


def load_meta(root: str | None) -> DatasetMeta:
    """The description of the dataset at `root`: its dataset.yaml, else VOC_META."""
    if root is None:
        return VOC_META
    path = meta_path(root)
    try:
        stamp = os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return VOC_META
    return _read(path, stamp)


@functools.lru_cache(maxsize=32)
def _read(path: str, stamp: int) -> DatasetMeta:  # stamp: a rewritten file is read again
    import yaml
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except UnicodeDecodeError as e:
        raise MetaError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                        f"save the dataset description as UTF-8") from None
    except (OSError, yaml.YAMLError) as e:
        first = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        raise MetaError(f"{path}: cannot read the dataset description ({first})") from None
    return DatasetMeta.from_dict(data, path)


def meta_of_checkpoint(ckpt: dict) -> DatasetMeta | None:
    """The description a checkpoint was trained with (None: an older or foreign checkpoint)."""
    d = ckpt.get("dataset_meta")
    return DatasetMeta.from_dict(d, "checkpoint dataset_meta") if d is not None else None


def require_same_classes(trained: DatasetMeta, data: DatasetMeta, checkpoint: str) -> None:
    """MetaError unless a checkpoint's classes (`trained`) are the dataset's (`data`), by name
    and order: a label value means the same class to both."""
    if trained.classes != data.classes:
        raise MetaError(f"{checkpoint}: trained on {trained.num_classes} classes ({trained.preview()}), but "
                        f"{data.source} lists {data.num_classes} ({data.preview()}); use the dataset "
                        f"the checkpoint was trained on")


def resolve_num_classes(meta: DatasetMeta, numclasses: int | None, flag: str = "--numclasses") -> DatasetMeta:
    """The description a run uses: --numclasses defaults to its class count, and a different
    value is an error. Without a dataset.yaml (VOC defaults) --numclasses N is taken as it
    always was: the first N VOC names (names class<i> beyond 21), VOC colours."""
    if numclasses is None or numclasses == meta.num_classes:
        return meta
    if numclasses < 1:
        raise MetaError(f"{flag} must be >= 1, got {numclasses}")
    if meta.source == VOC_META.source:
        names = [*VOC_CLASSES, *(f"class{i}" for i in range(len(VOC_CLASSES), numclasses))][:numclasses]
        return DatasetMeta.from_dict({"classes": names}, f"VOC defaults with {flag} {numclasses}")
    raise MetaError(f"{flag} {numclasses} conflicts with {meta.source}, which lists "
                    f"{meta.num_classes} classes ({meta.preview()}); drop {flag} or fix the description")
