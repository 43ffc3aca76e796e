"""File I/O that never leaves a half-written output and names the file when reading fails."""
from __future__ import annotations

import contextlib
import os
import tempfile

import numpy as np
from PIL import Image

from utils.palette import voc_palette


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A run killed mid-write leaves at most a `.tmp` file, never a truncated `path`.
    """
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{ext}", dir=d)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_png(array: np.ndarray, path: str, palette: bool = False) -> None:
    """Write a 2-D uint8 array as a mode-L PNG (or mode-P with the VOC palette), atomically."""
    array = np.asarray(array)
    if array.ndim != 2 or array.dtype != np.uint8:
        raise ValueError(f"{path}: expected a 2-D uint8 array, got {array.dtype} {array.shape}")
    h, w = array.shape
    img = Image.frombytes("P" if palette else "L", (w, h), np.ascontiguousarray(array).tobytes())
    if palette:
        img.putpalette(voc_palette().reshape(-1).tolist())
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def save_rgb_png(picture: np.ndarray, path: str) -> None:
    """Write an (H, W, 3) uint8 picture (overlays, sample grids) as a PNG, atomically."""
    picture = np.asarray(picture)
    if picture.ndim != 3 or picture.shape[2] != 3 or picture.dtype != np.uint8:
        raise ValueError(f"{path}: expected an (H, W, 3) uint8 picture, got {picture.dtype} {picture.shape}")
    with atomic_path(path) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG")


def read_label(path: str) -> np.ndarray:
    """(H, W) uint8 from a label or distance-map PNG.

    Mode L and P give their values (P: palette indices, as VOC masks are stored); an RGB(A)
    file gives channel 0, which is how the authors' distance maps are sometimes stored.
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
    if arr.ndim == 3:
        arr = arr[..., 0]
    if mode in ("I", "I;16", "F") or arr.dtype != np.uint8:
        if arr.min() < 0 or arr.max() > 255:
            raise OSError(f"{path}: values outside 0..255 (mode {mode})")
        arr = arr.astype(np.uint8)
    return np.ascontiguousarray(arr)


def read_image(path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
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
