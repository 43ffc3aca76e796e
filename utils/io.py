"""File I/O that never leaves a half-written output and names the file when reading fails."""
from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import sys

import cv2
import numpy as np
from PIL import Image

from utils.palette import voc_palette


# Our temporary files: `.{name}.{8 random chars}.tmp{ext}` beside the file they become
# (mkstemp's alphabet, so files left by older versions match too). Nothing else is ever
# removed as stale.
_TEMP_RE = re.compile(r"^\.(?P<base>.+)\.[a-z0-9_]{8}\.tmp(?P<ext>\.[^./]*)?$")
# What a full disk (or a file-size limit) looks like when it interrupts a write: the OS error,
# or torch.save's zip writer reporting a short write.
_NO_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NO_SPACE_TORCH = ("unexpected pos", "PytorchStreamWriter failed writing")


def is_temp_name(name: str) -> bool:
    """True for the name of one of our temporary files (atomic_path's)."""
    return _TEMP_RE.match(name) is not None


class OutputError(OSError):
    """An output that cannot be written (the disk is full, a folder is a file...); the message
    names the path and the problem."""


def check_output_dir(path: str, what: str, create: bool = True) -> None:
    """OutputError unless `path` is a directory or can be made one (no part of it is a file);
    `create`: make it now."""
    probe = os.path.abspath(path)
    while True:
        if os.path.exists(probe):
            if not os.path.isdir(probe):
                where = "is a file" if probe == os.path.abspath(path) else f"lies under the file {probe}"
                raise OutputError(f"{what} {path}: {where}, not a folder")
            break
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not create:
        return
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{what} {path}: cannot create the folder ({e.strerror or e})") from None


def remove_stale_temps(directory: str, name: str | None = None) -> int:
    """Delete the temporary files an interrupted run of ours left in `directory` (only those
    for `name` when given); how many. Call it before this run starts writing there."""
    if not os.path.isdir(directory):
        return 0
    want = None if name is None else os.path.splitext(os.path.basename(name))
    removed = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            m = _TEMP_RE.match(entry.name)
            if not m or not entry.is_file(follow_symlinks=False):
                continue
            if want is not None and (m["base"], m["ext"] or "") != want:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
    return removed


def prepare_output_dir(path: str, what: str) -> None:
    """Before a run writes into `path`: make sure it is (or can become) a folder, and clear the
    temp files an earlier, killed run of ours left there (they can be checkpoint-sized)."""
    check_output_dir(path, what)
    n = remove_stale_temps(path)
    if n:
        print(f"{path}: removed {n} temporary file(s) left by an interrupted run")


def report_failures(failures: list[str], what: str) -> int:
    """The end of a data tool that went on past bad files: 0 if none failed, else the count
    and one line per file (each message names it) on stderr, and 1."""
    if not failures:
        return 0
    print(f"error: {len(failures)} {what}:", file=sys.stderr)
    for msg in failures:
        print(f"  {msg}", file=sys.stderr)
    return 1


def _new_temp(d: str, base: str, ext: str) -> str:
    """Create an empty temp file with mode 0o666 & ~umask (mkstemp would make it 0600)."""
    for _ in range(100):
        tmp = os.path.join(d, f".{base}.{secrets.token_hex(4)}.tmp{ext}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise OutputError(f"{d}: cannot create a temporary file")  # pragma: no cover


def _write_failure(path: str, e: BaseException) -> OutputError | None:
    """The one-line error for a write that failed for lack of space, else None."""
    first = str(e).splitlines()[0] if str(e) else e.__class__.__name__
    if isinstance(e, OSError) and e.errno in _NO_SPACE_ERRNOS:
        reason = e.strerror or first
    elif isinstance(e, RuntimeError) and any(s in str(e) for s in _NO_SPACE_TORCH):
        reason = first
    else:
        return None
    return OutputError(f"{path}: cannot write it: the disk is full (or a file-size limit was hit): "
                       f"{reason}; the previous version, if any, is unchanged")


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A run killed mid-write leaves at most a temp file (remove_stale_temps clears it later),
    never a truncated `path`. Outputs get the umask's permissions, like any other file.
    """
    d = os.path.dirname(os.path.abspath(path))
    base, ext = os.path.splitext(os.path.basename(path))
    try:
        os.makedirs(d, exist_ok=True)
        tmp = _new_temp(d, base, ext)
    except OSError as e:  # a read-only folder, a file in the way: one line naming the path
        raise _write_failure(path, e) or _cannot_write(path, e) from None
    try:
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError as e:  # onto a folder, a vanished folder
            raise _cannot_write(path, e) from None
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        failure = _write_failure(path, e)
        if failure is not None:
            raise failure from None
        raise


def _cannot_write(path: str, e: OSError) -> OutputError:
    return OutputError(f"{path}: cannot write it ({e.strerror or e})")


def save_png(array: np.ndarray, path: str, palette: bool | np.ndarray = False) -> None:
    """Write a 2-D uint8 array as a mode-L PNG, or mode-P with a palette (True: VOC's; or an
    (n <= 256, 3) uint8 array, e.g. DatasetMeta.palette_array()), atomically."""
    array = np.asarray(array)
    if array.ndim != 2 or array.dtype != np.uint8:
        raise ValueError(f"{path}: expected a 2-D uint8 array, got {array.dtype} {array.shape}")
    h, w = array.shape
    use_palette = palette is not False and palette is not None
    img = Image.frombytes("P" if use_palette else "L", (w, h), np.ascontiguousarray(array).tobytes())
    if use_palette:
        colours = voc_palette() if palette is True else np.asarray(palette, np.uint8)
        img.putpalette(colours.reshape(-1).tolist())
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def save_rgb_png(picture: np.ndarray, path: str) -> None:
    """Write an (H, W, 3) uint8 picture (overlays, sample grids) as a PNG, atomically."""
    picture = np.asarray(picture)
    if picture.ndim != 3 or picture.shape[2] != 3 or picture.dtype != np.uint8:
        raise ValueError(f"{path}: expected an (H, W, 3) uint8 picture, got {picture.dtype} {picture.shape}")
    with atomic_path(path) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG")


COLOUR_MODES = ("RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV")


def read_label(path: str, colour: bool = True) -> np.ndarray:
    """(H, W) uint8 from a label or distance-map PNG.

    Mode L and P give their values (P: palette indices, as VOC masks are stored); an RGB(A)
    file gives channel 0, which is how the authors' distance maps are sometimes stored.
    `colour=False` (a file that must hold class indices): a colour picture is an OSError
    naming the file (a colour-rendered label's channel 0 is a colour, not a class).
    """
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            arr = np.asarray(img)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except Exception as e:  # PIL raises many kinds for broken files
        raise OSError(f"{path}: cannot decode ({e.__class__.__name__}: {e})") from None
    if not colour and mode in COLOUR_MODES:
        raise OSError(f"{path}: a colour picture (mode {mode}), not a label map of class indices: "
                      f"a colour-rendered label must be converted back to indices (mode L or P)")
    if arr.ndim == 3:
        arr = arr[..., 0]
    if mode in ("I", "I;16", "F") or arr.dtype != np.uint8:
        if arr.min() < 0 or arr.max() > 255:
            raise OSError(f"{path}: values outside 0..255 (mode {mode})")
        arr = arr.astype(np.uint8)
    return np.ascontiguousarray(arr)


JPEG_SUFFIXES = (".jpg", ".jpeg")


def read_image(path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB.

    Grey and colour JPEGs are decoded by OpenCV: the same pixels as Pillow (both libjpeg-turbo)
    in less time (bench/loader.py). The EXIF orientation is ignored, as Pillow's decode does and
    as the masks assume. Other formats, CMYK JPEGs, and a JPEG OpenCV cannot decode (truncated,
    ...) go to Pillow (read_image_pillow), whose error names the problem."""
    if path.lower().endswith(JPEG_SUFFIXES):
        try:
            data = np.fromfile(path, np.uint8)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: file not found") from None
        except OSError as e:
            raise OSError(f"{path}: cannot read ({e.strerror or e})") from None
        if _jpeg_components(data[:1 << 16].tobytes()) in (1, 3):  # CMYK: Pillow's colours differ by 1
            bgr = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
            if bgr is not None:
                return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return read_image_pillow(path)


def _jpeg_components(head: bytes) -> int | None:
    """The number of colour components in a JPEG's frame header (None: not found)."""
    if head[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 < len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF or 0xD0 <= marker <= 0xD7:  # fill byte, restart markers: no length
            i += 1 if marker == 0xFF else 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn
            return head[i + 9]
        i += 2 + ((head[i + 2] << 8) | head[i + 3])
    return None


def read_image_pillow(path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB by Pillow: every format, and the error message for a bad file."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except Exception as e:
        raise OSError(f"{path}: cannot decode ({e.__class__.__name__}: {e})") from None


def image_size(path: str) -> tuple[int, int]:
    """(H, W) from the header only (fast: no pixel decoding)."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            return h, w
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except Exception as e:
        raise OSError(f"{path}: cannot read header ({e.__class__.__name__}: {e})") from None
