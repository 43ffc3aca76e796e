"""The standard PASCAL VOC colour map, for mode-P label PNGs."""
import numpy as np


def voc_palette(n: int = 256) -> np.ndarray:
    """(n, 3) uint8: VOC's bit-interleaved colour map (class 0 black, 255 cream in VOC files)."""
    pal = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


def colorize(label: np.ndarray) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 RGB with the VOC colours."""
    return voc_palette()[np.asarray(label, dtype=np.uint8)]
