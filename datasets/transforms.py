"""The one joint transform (SPEC §6): every geometric op is applied to every field of a sample.

Training augmentation, in SPEC order: random scale 0.5-2.0; rotation within +-10 degrees
(p=0.5); Gaussian blur, kernel 5, on the image only (p=0.5); horizontal flip (p=0.5); random
465x465 crop with padding (a frame smaller than the crop lands at a random place inside it).
Padding -- for the crop and for the corners a rotation uncovers -- is the ImageNet mean for the
image (exactly 0 after normalisation, on exactly the pixels where the labels are padding), 255
for label fields and 0 for distance maps, so padded pixels are ignored by the CE losses and get
no DEL weight (the authors padded the maps with 255: SPEC §5 names that defect). Labels and
maps are resampled nearest-neighbour, the image bilinearly (edge replicated, as cv2.resize).

Speed: scale, rotation, flip and crop are composed into one affine map, and each field is
warped once, straight into the part of the crop window that lies inside the scaled frame
(one resampling instead of four, and never a 2x-upscaled full image). The blur still acts at
the scaled resolution, before the crop, with the frame edge reflected as a blur of the whole
frame would; crop padding is added after it, so it stays exactly the mean.

Randomness: in training, every sample's draw comes from augmentation_rng(seed, epoch, index),
passed as `rng=` (utils.training.EpochKeys gives ScribbleDataset those keys): a function of the
run's --seed, the epoch and the image only, so 0 or N loader workers, persistent or restarted,
any rank and any resume all see the same augmentations, different for every epoch. Without
`rng=`, a TrainTransform draws from its own np.random.Generator, seeded from
`torch.initial_seed()` the first time it runs in a process (and again whenever that seed
changes): a DataLoader worker's seed is `base_seed + worker_id`, `base_seed` drawn when the
workers start (at each epoch; only once with persistent workers, whose draws then depend on
the epoch they started in), so `torch.manual_seed(seed)` at the start reproduces a run (the
path of a plain DataLoader over a TrainTransform dataset: tests, bench/loader.py).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from datasets.layout import IGNORE_INDEX, LABEL_FIELDS, MAP_FIELDS
from datasets.meta import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401 (the defaults; a dataset.yaml may give its own)


def _pad_value(name: str, mean255: np.ndarray):
    """What a field is padded with: image -> mean (uint8 units), labels -> 255, maps -> 0."""
    if name == "image":
        return tuple(float(m) for m in mean255)
    if name in LABEL_FIELDS:
        return IGNORE_INDEX
    if name in MAP_FIELDS:
        return 0
    raise KeyError(name)


def _is_field(name: str) -> bool:
    return name == "image" or name in LABEL_FIELDS or name in MAP_FIELDS


# ---------------------------------------------------------------- the geometric core
def _scale_matrix(sx: float, sy: float) -> np.ndarray:
    """cv2.resize's pixel-centre convention: x' = (x + 0.5) * s - 0.5."""
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]], np.float64)


def _rotation_matrix(angle: float, w: int, h: int) -> np.ndarray:
    """Rotation by `angle` degrees about the centre of a w x h frame (which keeps its size)."""
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)
    return np.vstack([m, [0, 0, 1]])


def _flip_matrix(w: int) -> np.ndarray:
    return np.array([[-1, 0, w - 1], [0, 1, 0], [0, 0, 1]], np.float64)


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]], np.float64)


def _warp(array: np.ndarray, frame_from_source: np.ndarray, box, interpolation, border):
    """The pixels `box` = (x0, y0, x1, y1) of the frame, resampled from `array` in one warp.

    border=None replicates the edge (the image: bilinear taps just past the edge must not pull
    in the pad value, as cv2.resize would not); otherwise a constant.
    """
    x0, y0, x1, y1 = box
    m = (_translation(-x0, -y0) @ frame_from_source)[:2]
    mode = cv2.BORDER_REPLICATE if border is None else cv2.BORDER_CONSTANT
    return cv2.warpAffine(array, m, (x1 - x0, y1 - y0), flags=interpolation,
                          borderMode=mode, borderValue=0 if border is None else border)


def _warp_image(image: np.ndarray, frame_from_source: np.ndarray, box, mean) -> np.ndarray:
    """The image over `box`: bilinear, and the mean exactly where a label would be padding."""
    out = _warp(np.asarray(image, np.float32), frame_from_source, box, cv2.INTER_LINEAR, None)
    if frame_from_source[0, 1] or frame_from_source[1, 0]:  # only a rotation uncovers corners
        inside = _warp(np.ones(image.shape[:2], np.uint8), frame_from_source, box,
                       cv2.INTER_NEAREST, 0)
        out[inside == 0] = mean
    return out


def _apply_geometry(sample: dict, frame_from_source: np.ndarray, frame_hw, window_xy,
                    crop_hw, mean255: np.ndarray, blur_kernel: int | None) -> dict:
    """Warp every field into the frame, optionally blur the image there, crop with padding.

    frame_from_source: 3x3 affine from source pixels to the (scaled, rotated, flipped) frame
    of size frame_hw; window_xy: top-left of the crop window in frame pixels (negative or
    past the frame where the frame is smaller than the crop: that part is padding).
    """
    fh, fw = frame_hw
    ch, cw = crop_hw
    wx, wy = window_xy
    # Part of the crop window inside the frame, in frame pixels; the rest is padding.
    inner = (max(wx, 0), max(wy, 0), min(wx + cw, fw), min(wy + ch, fh))
    ox, oy = inner[0] - wx, inner[1] - wy            # where it lands in the crop
    iw, ih = inner[2] - inner[0], inner[3] - inner[1]
    out = dict(sample)
    for name, array in sample.items():
        if not _is_field(name):
            continue
        pad = _pad_value(name, mean255)
        if name != "image":
            warped = _warp(array, frame_from_source, inner, cv2.INTER_NEAREST, pad)
        elif not blur_kernel:
            warped = _warp_image(array, frame_from_source, inner, pad)
        else:
            # Blur as if over the whole frame: warp with enough context, clipped to the frame
            # (cv2's default reflect border then mirrors at the frame edge, as a full blur would).
            r = blur_kernel // 2
            ctx = (max(inner[0] - r, 0), max(inner[1] - r, 0),
                   min(inner[2] + r, fw), min(inner[3] + r, fh))
            warped = _warp_image(array, frame_from_source, ctx, pad)
            warped = cv2.GaussianBlur(warped, (blur_kernel, blur_kernel), 0)
            dx, dy = inner[0] - ctx[0], inner[1] - ctx[1]
            warped = warped[dy:dy + ih, dx:dx + iw]
        if (ih, iw) != (ch, cw):
            warped = cv2.copyMakeBorder(warped, oy, ch - oy - ih, ox, cw - ox - iw,
                                        cv2.BORDER_CONSTANT, value=pad)
        out[name] = warped
    return out


def _to_tensors(sample: dict, mean255: np.ndarray, std255: np.ndarray) -> dict:
    """image -> float32 3xHxW normalised; labels -> int64 HxW; maps -> float32 HxW (raw 0..255)."""
    out = dict(sample)
    for name, array in sample.items():
        if name == "image":
            image = np.empty((3,) + array.shape[:2], np.float32)
            for c in range(3):  # channel by channel: ~10x faster than broadcasting over HxWx3
                np.subtract(array[..., c], mean255[c], out=image[c], dtype=np.float32)
                image[c] /= std255[c]
            out[name] = torch.from_numpy(image)
        elif name in LABEL_FIELDS:
            out[name] = torch.from_numpy(array.astype(np.int64))
        elif name in MAP_FIELDS:
            out[name] = torch.from_numpy(array.astype(np.float32))
    return out


def _field_shape(sample: dict) -> tuple[int, int]:
    shapes = {name: a.shape[:2] for name, a in sample.items() if _is_field(name)}
    if not shapes:
        raise ValueError(f"sample has no image/label/map field: keys {sorted(sample)}")
    if len(set(shapes.values())) > 1:
        raise ValueError(f"sample fields differ in size: {shapes}")
    return next(iter(shapes.values()))


class _Normalising:
    def __init__(self, mean, std):
        self.mean255 = np.asarray(mean, np.float32) * np.float32(255)
        self.std255 = np.asarray(std, np.float32) * np.float32(255)


# ---------------------------------------------------------------- public transforms
def augmentation_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one training sample's augmentation (see the module docstring)."""
    return np.random.default_rng([int(seed) % 2**64, int(epoch), int(index)])


class TrainTransform(_Normalising):
    """SPEC §6 training augmentation on a sample dict (numpy HxWx3 / HxW uint8) -> tensors."""

    def __init__(self, crop_size: int = 465, scale_range=(0.5, 2.0), max_rotation: float = 10,
                 p_rotate: float = 0.5, blur_kernel: int = 5, p_blur: float = 0.5,
                 p_flip: float = 0.5, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__(mean, std)
        if blur_kernel and blur_kernel % 2 == 0:
            raise ValueError(f"blur_kernel must be odd, got {blur_kernel}")
        self.crop_size = int(crop_size)
        self.scale_range = tuple(scale_range)
        self.max_rotation = float(max_rotation)
        self.p_rotate, self.p_blur, self.p_flip = p_rotate, p_blur, p_flip
        self.blur_kernel = blur_kernel
        self._rng, self._rng_seed = None, None

    def _generator(self) -> np.random.Generator:
        # Re-seeded per process from torch's seed: see the module docstring.
        seed = torch.initial_seed()
        if self._rng is None or seed != self._rng_seed:
            self._rng, self._rng_seed = np.random.default_rng(seed), seed
        return self._rng

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        rng = rng if rng is not None else self._generator()
        h, w = _field_shape(sample)
        cs = self.crop_size
        # Random scale: one factor for every field.
        s = rng.uniform(*self.scale_range)
        fh, fw = max(1, round(h * s)), max(1, round(w * s))
        m = _scale_matrix(fw / w, fh / h)
        # Rotation about the frame centre; the frame keeps its size, corners become padding.
        if rng.random() < self.p_rotate:
            m = _rotation_matrix(rng.uniform(-self.max_rotation, self.max_rotation), fw, fh) @ m
        blur = self.blur_kernel if (self.blur_kernel and rng.random() < self.p_blur) else None
        if rng.random() < self.p_flip:
            m = _flip_matrix(fw) @ m
        # Random crop window: inside the frame, or (frame smaller) the frame anywhere inside it.
        wx = int(rng.integers(min(0, fw - cs), max(0, fw - cs), endpoint=True))
        wy = int(rng.integers(min(0, fh - cs), max(0, fh - cs), endpoint=True))
        out = _apply_geometry(sample, m, (fh, fw), (wx, wy), (cs, cs), self.mean255, blur)
        return _to_tensors(out, self.mean255, self.std255)

    def __repr__(self):
        return (f"TrainTransform(crop_size={self.crop_size}, scale_range={self.scale_range}, "
                f"max_rotation={self.max_rotation}, p_rotate={self.p_rotate}, "
                f"blur_kernel={self.blur_kernel}, p_blur={self.p_blur}, p_flip={self.p_flip})")


class ValTransform(_Normalising):
    """Centre crop with the training padding rules (crop_size=None: no crop), then normalise."""

    def __init__(self, crop_size: int | None = 465, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__(mean, std)
        self.crop_size = None if crop_size is None else int(crop_size)

    def __call__(self, sample: dict) -> dict:
        if self.crop_size is not None:
            h, w = _field_shape(sample)
            cs = self.crop_size
            sample = _apply_geometry(sample, np.eye(3), (h, w), ((w - cs) // 2, (h - cs) // 2),
                                     (cs, cs), self.mean255, None)
        return _to_tensors(sample, self.mean255, self.std255)

    def __repr__(self):
        return f"ValTransform(crop_size={self.crop_size})"


def denormalize(image: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """A normalised 3xHxW image tensor back to HxWx3 uint8 RGB (for pictures)."""
    x = image.detach().float().cpu().numpy().transpose(1, 2, 0)
    x = x * (np.asarray(std, np.float32) * 255) + np.asarray(mean, np.float32) * 255
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
