"""The ScribbleSup layout (SPEC §1) in one place: folder names, id lists, class names.

    <root>/ImageSets/SegmentationAug/{train,val}.txt
    <root>/JPEGImages/<id>.jpg
    <root>/SegmentationClassAug/<id>.png   full masks (validation only)
    <root>/pascal_2012_scribble/<id>.png   scribbles, 0..C-1, 255 unlabelled
    <root>/<pseudo>/<id>.png               pseudo-labels, 0..C-1, 255 ignore
    <root>/distance_map/<id>.png           D_s (uint8, L or RGB: channel 0)
    <root>/distance_pseudo/<id>.png        D_c
    <root>/dataset.yaml                    optional: class names, palette, image suffix,
                                           splits folder (datasets/meta.py; default VOC's)
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from datasets.meta import VOC_CLASSES, DatasetError, DatasetMeta, load_meta
from utils.labels import IGNORE_INDEX, label_value_problem

CLASSES = VOC_CLASSES  # the defaults; a dataset's own are its description's (datasets.meta)
# Tag names used by the ScribbleSup XML files, in label order.
SCRIBBLE_TAGS = (
    "background", "plane", "bike", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "table", "dog", "horse", "motorbike", "person", "plant", "sheep",
    "sofa", "train", "monitor",
)
NUM_CLASSES = len(CLASSES)
# IGNORE_INDEX (255) and the label-value rule live in utils.labels (utils.metrics uses them too).

IMAGE_DIR = "JPEGImages"
SPLIT_DIR = os.path.join("ImageSets", "SegmentationAug")
PSEUDO_SYNTHETIC = "pseudo_label"  # the synthetic set's pseudo-label folder

# Field name -> default folder. "pseudo" has no default: the caller names it.
DEFAULT_FOLDERS = {
    "image": IMAGE_DIR,
    "scribble": "pascal_2012_scribble",
    "pseudo": None,
    "dist_s": "distance_map",
    "dist_c": "distance_pseudo",
    "mask": "SegmentationClassAug",
}
FIELDS = tuple(DEFAULT_FOLDERS)            # every file-backed field, in canonical order
TRAIN_FIELDS = tuple(f for f in FIELDS if f != "mask")  # what a training sample reads
LABEL_FIELDS = ("scribble", "pseudo", "mask")   # class indices, padded with 255
MAP_FIELDS = ("dist_s", "dist_c")               # distance maps, padded with 0


def check_label_values(array, num_classes: int, path: str, what: str = "label") -> None:
    """DatasetError naming `path`, the offending values and the allowed ones unless every value
    of the label map is a class index 0..num_classes-1 or IGNORE_INDEX (utils.labels' rule)."""
    problem = label_value_problem(array, num_classes, IGNORE_INDEX, what)
    if problem:
        raise DatasetError(f"{path}: {problem}")


def read_ids(path: str) -> list[str]:
    """Ids of a split list: one per line; blank lines, surrounding spaces, a missing trailing
    newline and a UTF-8 byte-order mark are fine. The one reader of id lists: an id is a
    file name stem, never a path, so DatasetError names the line of one that is not UTF-8,
    holds an invisible character (NUL, tab, U+FEFF...) or a '/' or '\\' (an absolute path
    included), or is '.' or '..': nothing a tool derives from an id leaves its folder."""
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: id list not found")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read the id list ({e.strerror or e})") from None
    ids = []
    for n, raw in enumerate(data.removeprefix(b"\xef\xbb\xbf").split(b"\n"), 1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            raise DatasetError(f"{path}: line {n} is not UTF-8 text (byte 0x{raw[e.start]:02x} at "
                               f"column {e.start + 1}); save the list as UTF-8") from None
        problem = id_problem(line)
        if problem:
            raise DatasetError(f"{path}: line {n}: id {line!r} {problem}; ids are file names "
                               f"without extension, one per line")
        if line:
            ids.append(line)
    if not ids:
        raise DatasetError(f"{path}: id list is empty")
    return ids


def id_problem(id_: str) -> str | None:
    """Why `id_` (stripped) cannot name files in a folder, or None (also for an empty line)."""
    hidden = [c for c in id_ if not c.isprintable()]  # NUL, tab, U+FEFF, U+00A0 ...
    if hidden:
        return f"holds the invisible character U+{ord(hidden[0]):04X}"
    if id_.startswith("/"):
        return "is an absolute path"
    if "/" in id_ or "\\" in id_:
        return "holds a path separator"
    if id_ in (".", ".."):
        return "is a folder reference"
    return None


def split_path(root: str, split: str) -> str:
    """`train` / `val` -> <root>/<splits_dir>/<split>.txt (ImageSets/SegmentationAug unless the
    dataset.yaml says otherwise); an existing path is kept."""
    if os.path.isfile(split) or split.endswith(".txt"):
        return split if os.path.isabs(split) or os.path.isfile(split) else os.path.join(root, split)
    return os.path.join(root, load_meta(root).splits_dir, f"{split}.txt")


@dataclass
class Layout:
    """Where each field of an id lives under `root`. Folder names are overridable per field."""

    root: str
    folders: dict = field(default_factory=dict)
    meta: DatasetMeta | None = None  # default: the root's description (dataset.yaml, else VOC)

    def __post_init__(self):
        if self.meta is None:
            self.meta = load_meta(self.root)
        unknown = set(self.folders) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown field(s) {sorted(unknown)}; known: {FIELDS}")
        self.folders = {**DEFAULT_FOLDERS, **{k: v for k, v in self.folders.items() if v}}

    def folder(self, name: str) -> str:
        sub = self.folders[name]
        if sub is None:
            raise DatasetError(f"no folder given for field '{name}' (name the pseudo-label folder)")
        return os.path.join(self.root, sub)

    def input_folders(self) -> list[str]:
        """Every folder of this layout a tool may read (each field's, the id lists'): what no
        tool writes into (utils.outputs' rule)."""
        return [self.folder(f) for f in FIELDS if self.folders[f]] + [os.path.join(self.root, self.meta.splits_dir)]

    def path(self, name: str, id_: str) -> str:
        ext = self.meta.image_suffix if name == "image" else ".png"
        return os.path.join(self.folder(name), id_ + ext)
