"""ScribbleSup in one command: download, unpack, convert and check the training set (SPEC §1).

    python -m datasets.prepare_scribblesup --root dataset/ScribbleSup [--source authors|official]
        [--pseudo BMP|AFA|SEAM] [--checkpoint] [--from DIR] [--quick] [--workers N]
    sh scripts/prepare_scribblesup.sh [the same flags]

writes <root>/VOC2012 in the ScribbleSup layout and ends with datasets.check on it:

- `--source authors` (default): the authors' packages on Google Drive (through gdown): their
  complete ScribbleSup (JPEGImages, SegmentationClassAug, pascal_2012_scribble, ImageSets)
  and their distance maps (distance_map = D_s, distance_pseudo = D_c of their BMP labels).
- `--source official`: the VOC2012 trainval tar and SBD's benchmark.tgz (the addresses and
  MD5s of torchvision's VOCSegmentation / SBDataset), merged into SegmentationClassAug and
  the train_aug / val lists; the ScribbleSup XML scribbles (scribble_annotation.zip) drawn by
  datasets.convert_scribbles; D_s made by datasets.distance_map. These sources hold no
  pseudo-labels, so no D_c unless --pseudo is given.
- `--pseudo NAME`: the authors' NAME pseudo-labels (their Drive folder) in VOC2012/NAME and
  their D_c made by datasets.distance_map: VOC2012/distance_pseudo for BMP (the training
  scripts' default, and what the authors ship), VOC2012/distance_NAME otherwise.
- `--checkpoint`: the released R50 DeepLabV2 checkpoint (Drive, else Dropbox) in
  log/train_deeplabv2_r50/last_checkpoint.pth, where scripts/emlc_r50_deeplabv2.sh looks.
- `--from DIR`: archives fetched by hand (a browser download of a Drive file, say), found by
  their published name or, failing that, by what they hold; only the missing ones are
  downloaded. DIR is read, never written.

The tool owns <root> (utils/outputs.py): downloads go to <root>/downloads/ (resumed by the
next run after an interruption, deleted once unpacked unless --keep-downloads), archives are
unpacked into <root>/.staging/ and each finished folder is renamed into VOC2012/ only when
the whole step has succeeded and been verified (MD5 where published, else the ScribbleSup id
counts and a file for every id of the right size). A folder already in VOC2012/ is never
replaced: its step is skipped, so a second run finds everything done and says so. A host
that refuses is one `error:` line naming the address and the alternatives.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from tqdm import tqdm

from datasets.check import check_dataset, check_split
from datasets.convert_scribbles import convert as convert_scribble_xml
from datasets.distance_map import convert_folder as distance_maps
from datasets.layout import DEFAULT_FOLDERS, IMAGE_DIR, SPLIT_DIR, DatasetError, Layout, read_ids
from utils.download import (ArchiveError, FetchError, HostRefused, UnsupportedArchive, copy_atomic, fetch_gdrive,
                            fetch_http, gdrive_file_url, gdrive_folder_url, is_archive, list_gdrive_folder,
                            list_members, scratch_dir, unpack, verify_md5)
from utils.io import atomic_path, save_png
from utils.outputs import RunLock, check_name, claim_output_dir
from utils.parallel import parallel_map

TOOL = "prepare_scribblesup"
DEFAULT_ROOT = "dataset/ScribbleSup"   # scripts/emlc_r50_deeplabv2.sh reads DEFAULT_ROOT/VOC2012
VOC = "VOC2012"
# ScribbleSup's published split: VOC2012 train_aug and val (12,031 annotated images).
PUBLISHED = {"train": 10582, "val": 1449}
PSEUDO_METHODS = ("BMP", "AFA", "SEAM")
CHECKPOINT_DIR = os.path.join("log", "train_deeplabv2_r50")   # scripts/emlc_r50_deeplabv2.sh's
CHECKPOINT_NAME = "last_checkpoint.pth"

# The authors' packages (their README): Google Drive ids, and a Dropbox copy of the checkpoint.
DRIVE_SCRIBBLESUP = "1P_N_2RiJ0kYsz2A8-B5v3ltAxiXAmDGV"
DRIVE_DISTANCES = "1shuSMC5XvZPvM8j9cKunBR83EOGFNOjV"
DRIVE_PSEUDO_FOLDER = "1HrdPsI0K0udiPBy2_2y-j51oy205hBHH"
DRIVE_CHECKPOINT = "1EBHTmvRaYkCJKcmN26HgiBzJ6LJFZLay"
DROPBOX_CHECKPOINT = ("https://www.dropbox.com/scl/fi/4eki9ioib3pj4g60hu6hq/train_deeplabv2_r50.zip"
                      "?rlkey=qtep6d4r9ctoawxnqk0w0porw&dl=1")
# The ScribbleSup XML scribbles, as linked from jifengdai.org/downloads/scribble_sup (and
# fetched by rloss's data/pascal_scribble script). No checksum is published.
SCRIBBLE_XML_URL = "https://www.dropbox.com/s/9vh3kvtd742red8/scribble_annotation.zip?dl=1"

IMAGES, MASKS, SCRIBBLES = IMAGE_DIR, DEFAULT_FOLDERS["mask"], DEFAULT_FOLDERS["scribble"]
DIST_S, DIST_C = DEFAULT_FOLDERS["dist_s"], DEFAULT_FOLDERS["dist_c"]
IMAGE_SETS = SPLIT_DIR.split(os.sep)[0]
BASE = (IMAGES, MASKS, IMAGE_SETS)


def dist_c_folder(pseudo: str) -> str:
    """Where the D_c of a pseudo-label set goes: distance_pseudo for BMP (the authors' and the
    training scripts' default), distance_<NAME> for the others."""
    return DIST_C if pseudo == "BMP" else f"distance_{pseudo}"


# ----------------------------------------------------------------------------- packages
@dataclass(frozen=True)
class Source:
    """One place a package can be fetched from: an HTTP(S) address or a Google Drive file id."""
    url: str | None = None
    drive: str | None = None

    @property
    def address(self) -> str:
        return self.url or gdrive_file_url(self.drive)


def _dirs(member: str) -> list[str]:
    return member.replace("\\", "/").split("/")[:-1]


def _holds_dirs(*names: str) -> Callable[[list[str]], bool]:
    """A content test: the archive has folders of all these names (at any depth)."""
    def test(members: list[str]) -> bool:
        found = {d for m in members for d in _dirs(m)}
        return all(n in found for n in names)
    return test


@dataclass(frozen=True)
class Package:
    key: str
    what: str                      # for messages
    filename: str                  # its name in <root>/downloads/<key>/ and, first, in --from
    sources: tuple[Source, ...]    # tried in order
    md5: str | None = None         # where published
    holds: Callable[[list[str]], bool] | None = None   # recognises it in --from by its members
    other_route: str = ""          # the other --source, for messages

    def hint(self) -> str:
        where = " or ".join(s.address for s in self.sources)
        name = self.filename if any(s.url for s in self.sources) else "it"   # ours for a Drive file
        return f"download {name} by hand ({where}) into a folder and pass --from FOLDER{self.other_route}"


def official_sources() -> dict[str, tuple[str, str, str]]:
    """key -> (url, file name, md5) of the VOC2012 trainval tar and SBD's benchmark.tgz, as
    torchvision's VOCSegmentation / SBDataset download them."""
    from torchvision.datasets.sbd import SBDataset
    from torchvision.datasets.voc import DATASET_YEAR_DICT
    voc = DATASET_YEAR_DICT["2012"]
    return {"voc": (voc["url"], voc["filename"], voc["md5"]),
            "sbd": (SBDataset.url, SBDataset.filename, SBDataset.md5)}


def package(key: str) -> Package:
    authors, official = " or --source official", " or --source authors"
    if key in ("voc", "sbd"):
        url, filename, md5 = official_sources()[key]
        what, holds = {"voc": ("VOC2012 trainval", _holds_dirs("VOC2012", "SegmentationClass")),
                       "sbd": ("SBD (benchmark.tgz)", _holds_dirs("benchmark_RELEASE", "cls"))}[key]
        return Package(key, what, filename, (Source(url=url),), md5, holds, official)
    if key == "xml":
        return Package(key, "the ScribbleSup XML scribbles", "scribble_annotation.zip",
                       (Source(url=SCRIBBLE_XML_URL),), None,
                       lambda ms: any(m.endswith(".xml") and "pascal_2012" in _dirs(m) for m in ms), official)
    if key == "scribblesup":
        return Package(key, "the authors' ScribbleSup package", "scribblesup_authors",
                       (Source(drive=DRIVE_SCRIBBLESUP),), None,
                       _holds_dirs(SCRIBBLES, MASKS, IMAGES), authors)
    if key == "distances":
        return Package(key, "the authors' distance maps", "distance_maps_authors",
                       (Source(drive=DRIVE_DISTANCES),), None,
                       lambda ms: _holds_dirs(DIST_S)(ms) and not _holds_dirs(IMAGES)(ms), authors)
    if key == "checkpoint":
        return Package(key, "the released R50 DeepLabV2 checkpoint", "train_deeplabv2_r50.zip",
                       (Source(drive=DRIVE_CHECKPOINT), Source(url=DROPBOX_CHECKPOINT)), None,
                       lambda ms: any(os.path.basename(m) == CHECKPOINT_NAME for m in ms))
    raise KeyError(key)


# ----------------------------------------------------------------------------- one run
@dataclass
class Run:
    root: str
    from_dir: str | None = None
    workers: int = 1
    keep_downloads: bool = False
    installed: list[str] = field(default_factory=list)
    _members: dict = field(default_factory=dict)   # --from archive -> member names

    def __post_init__(self):
        self.voc = os.path.join(self.root, VOC)
        self.out = claim_output_dir(self.root, TOOL, "--root", inputs=[self.from_dir])
        self.out.claim([".staging"])
        shutil.rmtree(self.out.path(".staging"), ignore_errors=True)  # left by a killed run

    # --- what is there
    def in_place(self, names, what: str) -> bool:
        """True (and says so) if every folder of `names` is already in VOC2012/."""
        if all(os.path.exists(os.path.join(self.voc, n)) for n in names):
            print(f"{what}: already in place ({', '.join(f'{VOC}/{n}' for n in names)})")
            return True
        return False

    def scratch(self, name: str):
        return scratch_dir(os.path.join(self.out.path(".staging"), name))

    def install(self, staged: str, names, rename: dict | None = None) -> None:
        """Rename each staged folder into VOC2012/ (same file system: atomic); one already
        there is left as it is."""
        for name in names:
            target = (rename or {}).get(name, name)
            dst = os.path.join(self.voc, target)
            if os.path.exists(dst):
                continue
            self.out.claim([f"{VOC}/{target}"])
            os.makedirs(self.voc, exist_ok=True)
            os.rename(os.path.join(staged, name), dst)
            self.installed.append(f"{VOC}/{target}")

    # --- archives
    def from_dir_archives(self):
        """(name, path) of every archive in --from."""
        for name in sorted(os.listdir(self.from_dir)):
            path = os.path.join(self.from_dir, name)
            if os.path.isfile(path) and is_archive(path):
                yield name, path

    def members(self, path: str) -> list[str]:
        if path not in self._members:
            try:
                self._members[path] = list_members(path)
            except ArchiveError as e:
                print(f"warning: {e}; skipped", file=sys.stderr)
                self._members[path] = []
        return self._members[path]

    def find_local(self, pkg: Package) -> str | None:
        """The --from file for `pkg`: by its published name, else by what it holds."""
        if not self.from_dir:
            return None
        if os.path.isfile(os.path.join(self.from_dir, pkg.filename)):
            return os.path.join(self.from_dir, pkg.filename)
        if pkg.holds is not None:
            for _, path in self.from_dir_archives():
                if pkg.holds(self.members(path)):
                    return path
        return None

    def obtain(self, pkg: Package) -> tuple[str, bool]:
        """(path of the package's file, whether this tool downloaded it): from --from if there,
        else downloaded into <root>/downloads/<key>/, trying each source in turn."""
        local = self.find_local(pkg)
        if local is not None:
            if pkg.md5:
                verify_md5(local, pkg.md5, local)
            print(f"{pkg.what}: using {local}")
            return local, False
        if self.from_dir:
            print(f"{pkg.what}: not in {self.from_dir}, downloading it")
        folder = f"downloads/{pkg.key}"
        self.out.claim([folder])
        dest = os.path.join(self.out.path(folder), pkg.filename)
        if os.path.isfile(dest):
            print(f"{pkg.what}: downloaded earlier ({dest})")
            return dest, True
        refused = []
        for i, src in enumerate(pkg.sources):
            print(f"{pkg.what}: downloading {src.address}", flush=True)
            try:
                if src.drive:
                    return fetch_gdrive(src.drive, dest), True
                return fetch_http(src.url, dest, md5=pkg.md5, desc=pkg.filename), True
            except HostRefused as e:
                refused.append(str(e))
                if i + 1 < len(pkg.sources):
                    print(f"warning: {e}; trying the next address", file=sys.stderr)
        raise HostRefused(f"{'; '.join(refused)}; {pkg.hint()}")

    def done_with(self, path: str, downloaded: bool) -> None:
        """Delete a download (its folder <root>/downloads/<key>) once its step is installed,
        unless --keep-downloads."""
        if downloaded and not self.keep_downloads:
            shutil.rmtree(path if os.path.isdir(path) else os.path.dirname(path), ignore_errors=True)

    def unpack(self, pkg: Package, path: str, downloaded: bool, into: str, want=None) -> int:
        """unpack(), but a corrupt download is deleted so that the next run fetches it anew."""
        try:
            return unpack(path, into, want, desc=f"unpacking {pkg.what}")
        except UnsupportedArchive:
            raise
        except ArchiveError as e:
            if downloaded:
                os.remove(path)
                raise ArchiveError(f"{e}; the download was deleted: run again to fetch it anew, "
                                   f"or {pkg.hint()}") from None
            raise ArchiveError(f"{e}; fetch it again") from None


def find_folder(top: str, test: Callable[[str], bool], what: str, where: str) -> str:
    """The shallowest folder under `top` for which test(folder) holds; DatasetError naming
    `what` was looked for in `where` (and what its top level holds) otherwise."""
    for d, _, _ in sorted(os.walk(top), key=lambda w: (w[0].count(os.sep), w[0])):
        if test(d):
            return d
    seen = sorted(os.listdir(top))[:8] if os.path.isdir(top) else []
    raise DatasetError(f"{where}: no folder holding {what} found in it (its top level: "
                       f"{', '.join(seen) or 'nothing'}); not the expected package")


def _isdir_all(*names: str) -> Callable[[str], bool]:
    return lambda d: all(os.path.isdir(os.path.join(d, n)) for n in names)


def split_ids(root: str) -> dict[str, list[str]]:
    return {s: list(dict.fromkeys(read_ids(os.path.join(root, SPLIT_DIR, f"{s}.txt")))) for s in PUBLISHED}


def verify_files(root: str, where: str, fields_by_split: dict, folders: dict | None = None) -> None:
    """The ScribbleSup id counts and a file of the image's size for every id and field (header
    reads only); DatasetError naming `where` otherwise."""
    ids = split_ids(root)
    for split, n in PUBLISHED.items():
        if len(ids[split]) != n:
            raise DatasetError(f"{where}: {SPLIT_DIR}/{split}.txt lists {len(ids[split])} ids; "
                               f"ScribbleSup's {split} set has {n}: not the expected package")
    layout = Layout(root, folders or {})
    problems = []
    for split, fields in fields_by_split.items():
        problems += check_split(layout, ids[split], fields, deep=False, progress=True)
    if problems:
        raise DatasetError(f"{where}: {len(problems)} missing or wrong file(s), the first: {problems[0]}")


# ----------------------------------------------------------------------------- the steps
def step_authors_base(run: Run) -> None:
    names = BASE + (SCRIBBLES,)
    if run.in_place(names, "ScribbleSup (authors' package)"):
        return
    pkg = package("scribblesup")
    path, downloaded = run.obtain(pkg)
    with run.scratch("scribblesup") as tmp:
        run.unpack(pkg, path, downloaded, tmp)
        found = find_folder(tmp, lambda d: _isdir_all(*names)(d) and os.path.isdir(os.path.join(d, SPLIT_DIR)),
                            f"{', '.join(names[:-1])}, {SPLIT_DIR} and {SCRIBBLES}", path)
        verify_files(found, path, {"train": ("image", "scribble"), "val": ("image", "mask")})
        run.install(found, names)
    run.done_with(path, downloaded)


def step_authors_distances(run: Run) -> None:
    if run.in_place((DIST_S,), "distance maps (authors' package)"):
        return
    pkg = package("distances")
    path, downloaded = run.obtain(pkg)
    with run.scratch("distances") as tmp:
        run.unpack(pkg, path, downloaded, tmp)
        found = find_folder(tmp, _isdir_all(DIST_S), DIST_S, path)
        names = [n for n in (DIST_S, DIST_C) if os.path.isdir(os.path.join(found, n))]
        folders = {"dist_s": os.path.join(found, DIST_S), "dist_c": os.path.join(found, DIST_C)}
        verify_files(run.voc, path, {"train": tuple(["image"] + [f for f in ("dist_s", "dist_c")
                                                                  if os.path.isdir(folders[f])])}, folders)
        run.install(found, names)
    run.done_with(path, downloaded)


def segmentation_aug_ids(voc_train, voc_val, sbd_train, sbd_val) -> tuple[list[str], list[str]]:
    """The standard VOC2012 augmented split: train_aug = (SBD train | SBD val | VOC train)
    minus VOC val (10,582 ids), val = VOC val (1,449); sorted."""
    val = set(voc_val)
    return sorted((set(sbd_train) | set(sbd_val) | set(voc_train)) - val), sorted(val)


def read_sbd_mask(path: str) -> np.ndarray:
    """The class mask (uint8, 0..20) of one SBD cls/<id>.mat (GTcls.Segmentation)."""
    from scipy.io import loadmat
    try:
        gt = loadmat(path, squeeze_me=True, struct_as_record=False)["GTcls"]
        mask = np.asarray(gt.Segmentation)
    except Exception as e:  # scipy raises many kinds for a broken file
        raise DatasetError(f"{path}: not an SBD class mask ({e.__class__.__name__}: {e})") from None
    if mask.ndim != 2 or mask.min() < 0 or mask.max() > 255:
        raise DatasetError(f"{path}: GTcls.Segmentation is not a 2-D label map")
    return mask.astype(np.uint8)


def _aug_mask(job: tuple[str, str, str]) -> str | None:
    """Write one SegmentationClassAug mask: VOC's own PNG where VOC has one (copied), else the
    SBD mask as a VOC-palette PNG. An error message naming the file, or None."""
    voc_png, sbd_mat, out = job
    try:
        if os.path.isfile(voc_png):
            copy_atomic(voc_png, out)
        else:
            save_png(read_sbd_mask(sbd_mat), out, palette=True)
    except (DatasetError, OSError) as e:
        return str(e)
    return None


def build_segmentation_aug(voc_root: str, sbd_root: str, out: str, workers: int) -> None:
    """<out>/{JPEGImages, SegmentationClassAug, ImageSets/SegmentationAug/{train,val}.txt} from
    an unpacked VOC2012 (JPEGImages moved, not copied) and SBD's dataset/ folder."""
    seg = os.path.join(voc_root, "ImageSets", "Segmentation")
    train, val = segmentation_aug_ids(read_ids(os.path.join(seg, "train.txt")), read_ids(os.path.join(seg, "val.txt")),
                                      read_ids(os.path.join(sbd_root, "train.txt")),
                                      read_ids(os.path.join(sbd_root, "val.txt")))
    for split, ids in (("train", train), ("val", val)):
        with atomic_path(os.path.join(out, SPLIT_DIR, f"{split}.txt")) as tmp, open(tmp, "w") as f:
            f.write("".join(i + "\n" for i in ids))
    os.makedirs(os.path.join(out, MASKS))
    jobs = [(os.path.join(voc_root, "SegmentationClass", i + ".png"), os.path.join(sbd_root, "cls", i + ".mat"),
             os.path.join(out, MASKS, i + ".png")) for i in train + val]
    errors = [e for e in tqdm(parallel_map(_aug_mask, jobs, workers, preload=["datasets.prepare_scribblesup"]),
                              total=len(jobs), desc=MASKS, unit="mask") if e]
    if errors:
        raise DatasetError(f"{len(errors)} {MASKS} mask(s) could not be made, the first: {errors[0]}")
    os.rename(os.path.join(voc_root, IMAGES), os.path.join(out, IMAGES))


def step_official_base(run: Run) -> None:
    if run.in_place(BASE, "VOC2012 + SBD -> SegmentationClassAug"):
        return
    pkgs = {k: package(k) for k in ("voc", "sbd")}
    got = {k: (pkg, *run.obtain(pkg)) for k, pkg in pkgs.items()}
    with run.scratch("voc_sbd") as tmp:
        voc_pkg, voc_path, voc_dl = got["voc"]
        run.unpack(voc_pkg, voc_path, voc_dl, os.path.join(tmp, "voc"),
                   want=lambda n: any(f"VOC2012/{d}/" in n + "/" for d in (IMAGES, "SegmentationClass",
                                                                           "ImageSets/Segmentation")))
        sbd_pkg, sbd_path, sbd_dl = got["sbd"]
        run.unpack(sbd_pkg, sbd_path, sbd_dl, os.path.join(tmp, "sbd"),
                   want=lambda n: "/dataset/cls/" in n or n.endswith(("/dataset/train.txt", "/dataset/val.txt")))
        voc_root = find_folder(os.path.join(tmp, "voc"), _isdir_all(IMAGES, "SegmentationClass"),
                               f"{IMAGES} and SegmentationClass", voc_path)
        sbd_root = find_folder(os.path.join(tmp, "sbd"), _isdir_all("cls"), "cls/ (SBD's class masks)", sbd_path)
        staged = os.path.join(tmp, VOC)
        build_segmentation_aug(voc_root, sbd_root, staged, run.workers)
        verify_files(staged, f"{voc_path} + {sbd_path}", {"train": ("image", "mask"), "val": ("image", "mask")})
        run.install(staged, BASE)
    for _, path, downloaded in got.values():
        run.done_with(path, downloaded)


def step_official_scribbles(run: Run) -> None:
    if run.in_place((SCRIBBLES,), "scribbles (ScribbleSup XML)"):
        return
    ids = split_ids(run.voc)
    wanted = {i + ".xml" for split in ids.values() for i in split}
    pkg = package("xml")
    path, downloaded = run.obtain(pkg)
    with run.scratch("scribbles") as tmp:
        run.unpack(pkg, path, downloaded, os.path.join(tmp, "xml"),
                   want=lambda n: "pascal_2012" in _dirs(n) and os.path.basename(n) in wanted)
        xml_dir = find_folder(os.path.join(tmp, "xml"), lambda d: os.path.basename(d) == "pascal_2012",
                              "pascal_2012/ (one XML per image)", path)
        missing = sorted(wanted - set(os.listdir(xml_dir)))
        if missing:
            raise DatasetError(f"{path}: no scribble for {len(missing)} of the {len(wanted)} ScribbleSup "
                               f"ids (the first: pascal_2012/{missing[0]}): not the expected package")
        stats = convert_scribble_xml(xml_dir, os.path.join(run.voc, IMAGES), os.path.join(tmp, SCRIBBLES),
                                     run.workers)
        if stats.problems:
            raise DatasetError(f"{path}: {len(stats.problems)} scribble file(s) could not be converted, "
                               f"the first: {stats.problems[0]}")
        print(stats.summary().splitlines()[0])
        run.install(tmp, (SCRIBBLES,))
    run.done_with(path, downloaded)


def step_distance_map(run: Run, kind: str, src: str, name: str, what: str) -> None:
    """D_s (kind 'scribble') or D_c ('pseudo') of VOC2012/<src> into VOC2012/<name>."""
    if run.in_place((name,), what):
        return
    with run.scratch(name) as tmp:
        failures = distance_maps(kind, os.path.join(run.voc, src), os.path.join(tmp, name), workers=run.workers)
        if failures:
            raise DatasetError(f"{len(failures)} {name} map(s) could not be made, the first: {failures[0]}")
        run.install(tmp, (name,))


def _pseudo_member(name: str) -> Callable[[str], bool]:
    return lambda path: name.casefold() in path.casefold()


def obtain_pseudo(run: Run, name: str) -> tuple[list[str], str | None]:
    """(the files of the authors' `name` pseudo-labels, the downloads folder holding them or
    None for a --from archive): an archive in
    --from named like `name` or holding a folder named like it, else the entries of the
    authors' Drive folder whose path names it."""
    if run.from_dir:
        for base, path in run.from_dir_archives():
            members = run.members(path) if name.casefold() not in base.casefold() else None
            if members is None or any(m.lower().endswith(".png") and any(_pseudo_member(name)(d) for d in _dirs(m))
                                      and IMAGES not in _dirs(m) for m in members):
                print(f"{name} pseudo-labels: using {path}")
                return [path], None
        print(f"{name} pseudo-labels: not in {run.from_dir}, downloading them")
    folder_url = gdrive_folder_url(DRIVE_PSEUDO_FOLDER)
    hint = f"download the {name} files of {folder_url} by hand into a folder and pass --from FOLDER"
    try:
        entries = list_gdrive_folder(DRIVE_PSEUDO_FOLDER)
    except HostRefused as e:
        raise HostRefused(f"{e}; {hint}") from None
    chosen = [(fid, p) for fid, p in entries if _pseudo_member(name)(p)]
    if not chosen:
        raise DatasetError(f"{folder_url}: nothing named like {name} in the authors' pseudo-label folder "
                           f"(it holds: {', '.join(p for _, p in entries[:8]) or 'nothing'})")
    folder = f"downloads/pseudo_{name}"
    run.out.claim([folder])
    files = []
    for fid, rel in chosen:
        dest = os.path.join(run.out.path(folder), *check_name(rel, "Drive path").split("/"))
        print(f"{name} pseudo-labels: downloading {rel} ({gdrive_file_url(fid)})", flush=True)
        try:
            files.append(fetch_gdrive(fid, dest))
        except HostRefused as e:
            raise HostRefused(f"{e}; {hint}") from None
    return files, run.out.path(folder)


def pseudo_label_folder(top: str, name: str, where: str) -> str:
    """The folder of PNGs under `top` that holds the pseudo-labels: the one with the most PNGs,
    among those named like `name` if several tie (labels beside their colour pictures, say);
    DatasetError naming `where` if there is none or the choice is not clear."""
    counts = {d: sum(f.lower().endswith(".png") for f in fs) for d, _, fs in os.walk(top)}
    most = max(counts.values(), default=0)
    if not most:
        raise DatasetError(f"{where}: no PNG pseudo-labels in it: not the expected package")
    best = [d for d, n in counts.items() if n == most]
    if len(best) > 1:
        best = [d for d in best if name.casefold() in os.path.basename(d).casefold()] or best
    if len(best) > 1:
        listed = ", ".join(os.path.relpath(d, top) for d in best)
        raise DatasetError(f"{where}: several folders of {most} PNGs ({listed}); unpack it by hand and "
                           f"pass the folder of labels, zipped, with --from")
    return best[0]


def step_pseudo(run: Run, name: str) -> None:
    if run.in_place((name,), f"{name} pseudo-labels"):
        return
    files, folder = obtain_pseudo(run, name)
    downloaded = folder is not None
    pkg = Package("pseudo", f"the {name} pseudo-labels", name, (Source(drive=DRIVE_PSEUDO_FOLDER),))
    with run.scratch("pseudo") as tmp:
        unpacked = os.path.join(tmp, "x")
        for path in files:
            if is_archive(path):
                run.unpack(pkg, path, downloaded, unpacked)
            else:  # loose label files of the Drive folder
                copy_atomic(path, os.path.join(unpacked, os.path.relpath(path, folder)))
        found = pseudo_label_folder(unpacked, name, files[0])
        verify_files(run.voc, files[0], {"train": ("image", "pseudo")}, {"pseudo": found})
        run.install(os.path.dirname(found), [os.path.basename(found)], rename={os.path.basename(found): name})
    run.done_with(folder or files[0], downloaded)


def step_checkpoint(run: Run, checkpoint_dir: str) -> str:
    target = os.path.join(checkpoint_dir, CHECKPOINT_NAME)
    if os.path.isfile(target):
        print(f"checkpoint: already in place ({target})")
        return target
    out = claim_output_dir(checkpoint_dir, TOOL, "--checkpoint-dir", inputs=[run.from_dir, run.root])
    out.claim([CHECKPOINT_NAME])
    pkg = package("checkpoint")
    plain = run.from_dir and os.path.isfile(os.path.join(run.from_dir, CHECKPOINT_NAME))
    path, downloaded = (os.path.join(run.from_dir, CHECKPOINT_NAME), False) if plain else run.obtain(pkg)
    with run.scratch("checkpoint") as tmp:
        if plain:
            found = path
        else:
            run.unpack(pkg, path, downloaded, tmp, want=lambda n: os.path.basename(n) == CHECKPOINT_NAME)
            hits = [os.path.join(d, f) for d, _, fs in os.walk(tmp) for f in fs if f == CHECKPOINT_NAME]
            if len(hits) != 1:
                raise ArchiveError(f"{path}: holds {len(hits)} files named {CHECKPOINT_NAME}, not one: "
                                   f"not the expected package")
            found = hits[0]
        from utils.checkpoint import CheckpointError, load_checkpoint
        try:
            load_checkpoint(found)
        except CheckpointError as e:
            raise ArchiveError(f"{path}: {e}") from None
        copy_atomic(found, out.path(CHECKPOINT_NAME))
    run.done_with(path, downloaded)
    run.installed.append(target)
    print(f"checkpoint: {target}")
    return target


# ----------------------------------------------------------------------------- the tool
CHECKED = "checked.txt"   # in <root>: what the last deep check that passed covered


def final_check(run: Run, pseudo: str | None, deep: bool) -> None:
    """datasets.check on VOC2012: the training fields there are (D_c only with pseudo-labels
    or the authors' maps), the validation images and masks. Deep (every file decoded) unless
    `deep` is off or a deep check of the same fields passed since the last install."""
    train = ["image", "scribble", "dist_s"]
    folders = {}
    if pseudo:
        train += ["pseudo", "dist_c"]
        folders = {"pseudo": pseudo, "dist_c": dist_c_folder(pseudo)}
    elif os.path.isdir(os.path.join(run.voc, DIST_C)):
        train.append("dist_c")
    ids = split_ids(run.voc)
    fields = {"train": tuple(train), "val": ("image", "mask")}
    covered = f"{sorted(fields.items())} {sorted(folders.items())}\n"
    stamp = run.out.path(CHECKED)
    run.out.claim([CHECKED])
    if run.installed and os.path.exists(stamp):
        os.remove(stamp)
    if deep and os.path.isfile(stamp) and open(stamp, encoding="utf-8").read() == covered:
        deep = False  # nothing changed since a deep check of these fields passed
    report = check_dataset(run.voc, splits=tuple(PUBLISHED), folders=folders, deep=deep, progress=True,
                           fields_by_split=fields)
    if not report.ok:
        print(report.summary(), file=sys.stderr)
        raise DatasetError(f"{run.voc}: datasets.check found {len(report.problems)} problem(s) (listed above)")
    print(report.summary())
    if deep:
        with atomic_path(stamp) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(covered)
    counts = {s: len(v) for s, v in ids.items()}
    if counts != PUBLISHED:
        raise DatasetError(f"{run.voc}: the id lists hold {counts}, ScribbleSup has {PUBLISHED}")


def prepare(root: str, source: str = "authors", pseudo: str | None = None, checkpoint: bool = False,
            from_dir: str | None = None, checkpoint_dir: str = CHECKPOINT_DIR, keep_downloads: bool = False,
            deep: bool = True, workers: int | None = None) -> Run:
    """The whole preparation (module docstring); the Run says what it installed."""
    if from_dir is not None and not os.path.isdir(from_dir):
        raise DatasetError(f"--from {from_dir}: folder not found")
    run = Run(root, from_dir, max(1, workers or os.cpu_count() or 1), keep_downloads)
    with RunLock(root, TOOL, "--root"):
        try:
            if source == "authors":
                step_authors_base(run)
                step_authors_distances(run)
            else:
                step_official_base(run)
                step_official_scribbles(run)
                step_distance_map(run, "scribble", SCRIBBLES, DIST_S, "D_s (datasets.distance_map)")
            if pseudo:
                step_pseudo(run, pseudo)
                step_distance_map(run, "pseudo", pseudo, dist_c_folder(pseudo),
                                  f"D_c of {pseudo} (datasets.distance_map)")
            if checkpoint:
                step_checkpoint(run, checkpoint_dir)
        finally:
            shutil.rmtree(run.out.path(".staging"), ignore_errors=True)
        final_check(run, pseudo, deep)
    return run


def _next_steps(run: Run, pseudo: str | None, checkpoint: bool, checkpoint_dir: str) -> str:
    data = "" if os.path.normpath(run.voc) == os.path.normpath(os.path.join(DEFAULT_ROOT, VOC)) else f"DATA={run.voc} "
    lines = ["done: " + (f"installed {', '.join(run.installed)}" if run.installed
                         else "nothing to do, everything was already in place")]
    if checkpoint:
        ckpt = ("" if os.path.normpath(checkpoint_dir) == CHECKPOINT_DIR
                else f"CHECKPOINT={os.path.join(checkpoint_dir, CHECKPOINT_NAME)} ")
        lines.append(f"  score the released checkpoint:  {data}{ckpt}sh scripts/emlc_r50_deeplabv2.sh")
    if pseudo:
        dist = "" if dist_c_folder(pseudo) == DIST_C else f" DIST_C={dist_c_folder(pseudo)}"
        lines.append(f"  train (paper setting):          {data}PSEUDO={pseudo}{dist} sh scripts/train_r50_deeplabv2.sh")
    else:
        lines.append("  pseudo-labels: add --pseudo BMP (the authors'), or make them from the scribbles: "
                     f"{data}sh scripts/make_pseudo_labels.sh")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m datasets.prepare_scribblesup",
                                 description=__doc__.split("\n")[0],
                                 epilog="Layout, sources and sizes: docs/data.md")
    ap.add_argument("--root", default=DEFAULT_ROOT,
                    help=f"folder this tool owns; the data goes to ROOT/VOC2012 (default {DEFAULT_ROOT})")
    ap.add_argument("--source", choices=("authors", "official"), default="authors",
                    help="authors: their Google Drive packages (default); official: VOC2012 + SBD + "
                         "the ScribbleSup XML scribbles, converted here")
    ap.add_argument("--pseudo", type=str.upper, choices=PSEUDO_METHODS, default=None,
                    help="also the authors' pseudo-labels of this method (VOC2012/NAME) and their D_c")
    ap.add_argument("--checkpoint", action="store_true",
                    help=f"also the released R50 DeepLabV2 checkpoint, as {CHECKPOINT_DIR}/{CHECKPOINT_NAME}")
    ap.add_argument("--checkpoint-dir", default=CHECKPOINT_DIR,
                    help=f"where --checkpoint puts it (default {CHECKPOINT_DIR}, where "
                         "scripts/emlc_r50_deeplabv2.sh looks)")
    ap.add_argument("--from", dest="from_dir", default=None,
                    help="folder of archives fetched by hand (read only); what is missing there is downloaded")
    ap.add_argument("--keep-downloads", action="store_true", help="keep ROOT/downloads after unpacking")
    ap.add_argument("--quick", action="store_true",
                    help="final check of file headers only (default: decode every file, check label values)")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    args = ap.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        ap.error("--workers must be >= 1")

    def work():
        run = prepare(args.root, args.source, args.pseudo, args.checkpoint, args.from_dir, args.checkpoint_dir,
                      args.keep_downloads, not args.quick, args.workers)
        print(_next_steps(run, args.pseudo, args.checkpoint, args.checkpoint_dir))

    from utils.cli import run_main
    return run_main(work, (DatasetError, FetchError),
                    "downloads resume from ROOT/downloads on the next run; nothing was half-installed")


if __name__ == "__main__":
    sys.exit(main())
