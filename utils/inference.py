"""Multi-scale sliding-window inference: the paper's evaluation protocol (SPEC §7), batched.

For each scale s the image is resized so its long side is 512*s, padded to at least the crop,
cut into 465x465 windows with stride ceil(465*2/3); the windows go through the network
`crop_batch` at a time, and the softmax of each window's logits (upsampled to the crop) is
averaged where windows overlap. Each scale's probabilities are resized back to the original
size and averaged over scales (and over horizontal flips if asked). `multi_scale_predict`
returns those probabilities (the demo notebook, eval.py --crf); `multi_scale_label` returns their
argmax with memory bounded whatever the image's size (eval.py, predict.py): the same labels,
computed the same way for any image whose probabilities fit in LABEL_WORK_BYTES.

Resampling conventions, fixed here and shared with the losses (losses/__init__.py):
- logits -> crop/label size: bilinear, align_corners=True (`upsample_logits`), as the authors'
  evaluate.py did (and their DeepLab code throughout);
- image -> scaled image and probabilities -> original size: bilinear, align_corners=False,
  which is what the authors' cv2.resize(INTER_LINEAR) computes (half-pixel centres, no
  antialiasing). Resizing the normalised image equals normalising the resized one, because
  bilinear weights sum to 1.
Padding is split evenly between the two sides (top/left get the floor of half), as the
authors' evaluate.py did, and uses 0 = the ImageNet mean after normalisation.
"""
from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

# The authors' DeepLab code upsamples logits with align_corners=True; training (CDSPLoss) and
# evaluation must agree, so both call `upsample_logits`.
LOGITS_ALIGN_CORNERS = True

PAPER_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)


def upsample_logits(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of (B, C, h, w) logits to `size` (H, W); returned as is if already there."""
    size = tuple(int(s) for s in size)
    if tuple(logits.shape[-2:]) == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=LOGITS_ALIGN_CORNERS)


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    # Image / probability resampling: cv2.resize(INTER_LINEAR) convention.
    size = tuple(int(s) for s in size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _starts(n: int, crop: int, stride: int) -> list[int]:
    """Window starts along one axis: every `stride`, the last one aligned to the border."""
    if n <= crop:
        return [0]
    grid = math.ceil((n - crop) / stride) + 1
    return [min(i * stride, n - crop) for i in range(grid)]


def sliding_window_windows(h: int, w: int, crop: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners (y0, x0) of crop x crop windows covering every pixel of an h x w image.

    Along each axis: starts 0, stride, 2*stride, ... and a last window flush with the border
    (the authors' grid: ceil((n - crop) / stride) + 1 windows). An axis shorter than the crop
    gets one window at 0 (the caller pads the image up to the crop).
    """
    if crop <= 0 or stride <= 0:
        raise ValueError(f"crop and stride must be positive, got crop={crop} stride={stride}")
    return [(y, x) for y in _starts(h, crop, stride) for x in _starts(w, crop, stride)]


def _autocast(device: torch.device, amp: bool):
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type)


def _check_input(model, image: torch.Tensor) -> None:
    if getattr(model, "training", False):
        # BatchNorm in train mode would use window statistics and update running stats.
        raise ValueError("model is in training mode; call model.eval() before inference")
    if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise ValueError(f"expected one normalised image of shape (1, 3, H, W), got {tuple(image.shape)}")


@torch.inference_mode()
def predict_scale(model, image: torch.Tensor, crop: int = 465, stride_rate: float = 2 / 3,
                  crop_batch: int = 8, amp: bool = False) -> torch.Tensor:
    """Sliding-window class probabilities (1, C, H, W) of one normalised image (1, 3, H, W).

    Pads to at least crop x crop with 0 (the mean), runs all windows in batches of
    `crop_batch`, averages the per-window softmax where windows overlap, crops the padding off.
    """
    _check_input(model, image)
    if crop_batch < 1:
        raise ValueError(f"crop_batch must be >= 1, got {crop_batch}")
    _, _, h, w = image.shape
    pad_h, pad_w = max(crop - h, 0), max(crop - w, 0)
    top, left = pad_h // 2, pad_w // 2
    padded = F.pad(image, (left, pad_w - left, top, pad_h - top), value=0.0)
    hp, wp = padded.shape[-2:]
    stride = math.ceil(crop * stride_rate)
    windows = sliding_window_windows(hp, wp, crop, stride)

    probs = None
    count = torch.zeros((1, 1, hp, wp), device=image.device, dtype=torch.float32)
    for i in range(0, len(windows), crop_batch):
        chunk = windows[i:i + crop_batch]
        batch = torch.cat([padded[..., y:y + crop, x:x + crop] for y, x in chunk])
        with _autocast(image.device, amp):
            logits = model(batch)["out"]
        p = torch.softmax(upsample_logits(logits.float(), (crop, crop)), dim=1)
        if probs is None:
            probs = torch.zeros((1, p.shape[1], hp, wp), device=image.device, dtype=torch.float32)
        for k, (y, x) in enumerate(chunk):
            probs[0, :, y:y + crop, x:x + crop] += p[k]
            count[0, :, y:y + crop, x:x + crop] += 1
    probs /= count
    return probs[..., top:top + h, left:left + w]


def scaled_size(h: int, w: int, long_side: int) -> tuple[int, int]:
    """(H', W') with the long side = long_side and the aspect ratio kept, rounded half up."""
    if h > w:
        return long_side, max(1, int(long_side * w / h + 0.5))
    return max(1, int(long_side * h / w + 0.5)), long_side


def _scale_probabilities(model, image: torch.Tensor, scales: Sequence[float], base_size: int, crop: int,
                         stride_rate: float, flip: bool, crop_batch: int, amp: bool):
    """Each scale's class probabilities (1, C, h_s, w_s) at the size the network saw them (a
    mirrored pass flipped back), in the order multi_scale_predict averages them."""
    h, w = image.shape[-2:]
    for s in scales:
        scaled = _resize(image, scaled_size(h, w, int(base_size * s + 0.5)))
        for mirrored in ((False, True) if flip else (False,)):
            inp = scaled.flip(-1) if mirrored else scaled
            p = predict_scale(model, inp, crop=crop, stride_rate=stride_rate,
                              crop_batch=crop_batch, amp=amp)
            yield p.flip(-1) if mirrored else p


@torch.inference_mode()
def multi_scale_predict(model, image: torch.Tensor, scales: Sequence[float] = PAPER_SCALES,
                        base_size: int = 512, crop: int = 465, stride_rate: float = 2 / 3,
                        flip: bool = False, crop_batch: int = 8, amp: bool = False) -> torch.Tensor:
    """Class probabilities (1, C, H, W) at the original size: the paper's protocol (SPEC §7).

    For each scale s the long side becomes int(base_size * s + 0.5) (round half up; the authors
    used Python's round, which only differs on exact .5 ties, never for 512 * the paper's
    scales), the short side keeps the aspect ratio, rounded the same way. Probabilities are
    averaged over scales, and over the image and its mirror if `flip`. argmax gives the label;
    `multi_scale_label` gives the same label without holding C x H x W probabilities.
    """
    _check_input(model, image)
    if not scales:
        raise ValueError("scales is empty")
    maps = _scale_probabilities(model, image, scales, base_size, crop, stride_rate, flip, crop_batch, amp)
    return _mean_resized(maps, image.shape[-2:])


def _mean_resized(maps: Iterable[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
    """The average of `maps` (each (1, C, h_k, w_k)) resized to `size`: (1, C, H, W)."""
    total, n = None, 0
    for p in maps:
        p = _resize(p, size)
        total = p if total is None else total + p
        n += 1
    return total / n


# ----------------------------------------------------------------------------- labels, bounded memory
# multi_scale_predict holds C x H x W float32 probabilities at the image's size (84 bytes a pixel
# for 21 classes, three such arrays at the peak: ~12 GB for a 6000x8000 photo). multi_scale_label
# keeps each scale's probabilities at the size the network saw them; when the image's would take
# more than this many bytes, it makes the label a band of rows at a time within about as much:
LABEL_WORK_BYTES = 256 * 2**20


def _linear_weights(n_in: int, n_out: int, device) -> tuple[torch.Tensor, ...]:
    """Bilinear resampling along one axis as _resize does it (align_corners=False): for each
    output index its two source indices and their float32 weights (i0, i1, w0, w1), by torch's
    formula: source = scale * (index + 0.5) - 0.5 with scale = n_in / n_out in float32, rounded
    once (as torch's compiled kernels compute it, with a fused multiply-add), clamped at 0."""
    scale = (torch.tensor(float(n_in)) / n_out).double()  # the float32 quotient
    # exact in float64, then rounded once to float32
    src = (scale * (torch.arange(n_out, dtype=torch.float64) + 0.5) - 0.5).float().clamp(min=0)
    i0 = src.long()  # src >= 0: truncation is floor
    i1 = torch.where(i0 < n_in - 1, i0 + 1, i0)
    w1 = (src - i0).clamp(0, 1)
    return i0.to(device), i1.to(device), (1 - w1).to(device), w1.to(device)


def _band_means(maps: list[torch.Tensor], height: int, width: int, work_bytes: int):
    """Yield (r0, r1, the average of `maps` resized to (height, width), rows r0:r1), in bands of
    rows that take about `work_bytes` each.

    For each map, the source rows a band needs are resized along the width (_resize, the height
    kept: each row's own blend of two columns), then blended along the height with _resize's
    weights (_linear_weights) as torch's kernel does: w0 * row0 + (w1 * row1), fused. That is
    _resize's arithmetic where torch's kernel fuses the multiply-add (bit-identical on the CPU of
    bench/results/inference_memory.txt); where it does not (it depends on the build and on the
    tensors' shapes), a value may differ in its last bit (~1e-7), which moves a label only where
    two classes tie to that precision.
    """
    classes = maps[0].shape[1]
    # per band row: a map's source rows (ratio + 1 at most), the two rows gathered, a product,
    # the blend, the running sum, the mean: float32, classes x width each
    ratio = max(math.ceil(p.shape[-2] / height) for p in maps)
    rows = max(1, work_bytes // (4 * classes * width * (ratio + 7)))
    weights = [_linear_weights(p.shape[-2], height, p.device) for p in maps]
    for r0 in range(0, height, rows):
        r1 = min(r0 + rows, height)
        total = None
        for p, (i0, i1, w0, w1) in zip(maps, weights):  # in the order of the direct sum
            i0, i1, w0, w1 = i0[r0:r1], i1[r0:r1], w0[r0:r1, None], w1[r0:r1, None]
            a, b = int(i0[0]), int(i1[-1]) + 1
            src = _resize(p[:, :, a:b], (b - a, width))  # the band's source rows, width resized
            term = torch.addcmul(src[:, :, i1 - a] * w1, src[:, :, i0 - a], w0)
            total = term if total is None else total + term
        yield r0, r1, total / len(maps)


def mean_label(maps: Iterable[torch.Tensor], size: Sequence[int], work_bytes: int | None = None) -> torch.Tensor:
    """argmax over classes (ties to the lowest) of the average of `maps` (each (1, C, h_k, w_k))
    resized to `size` (H, W), as uint8 (int64 beyond 256 classes).

    When the full-size average fits in `work_bytes` (its peak: three C x H x W float32 sums and
    the argmax) it is computed just so, a map at a time: (sum_k _resize(map_k) / n).argmax, the
    exact labels of multi_scale_predict. Beyond, the maps are kept and the labels made in bands
    of rows within about `work_bytes` (_band_means), whatever the size. None: LABEL_WORK_BYTES.
    """
    work_bytes = LABEL_WORK_BYTES if work_bytes is None else work_bytes
    height, width = int(size[0]), int(size[1])
    maps = iter(maps)
    first = next(maps)
    classes = first.shape[1]
    dtype = torch.uint8 if classes <= 256 else torch.int64
    if (12 * classes + 8) * height * width <= work_bytes:
        return _mean_resized(itertools.chain([first], maps), (height, width)).argmax(1)[0].to(dtype)
    label = torch.empty((height, width), dtype=dtype, device=first.device)
    for r0, r1, mean in _band_means([first, *maps], height, width, work_bytes):
        label[r0:r1] = mean.argmax(1)[0]
    return label


@torch.inference_mode()
def multi_scale_label(model, image: torch.Tensor, scales: Sequence[float] = PAPER_SCALES,
                      base_size: int = 512, crop: int = 465, stride_rate: float = 2 / 3,
                      flip: bool = False, crop_batch: int = 8, amp: bool = False,
                      work_bytes: int | None = None) -> torch.Tensor:
    """The label (H, W) of multi_scale_predict(...).argmax(1)[0] without its C x H x W
    probabilities: memory beyond the image and its label is each scale's probabilities at the
    size the network saw them (bounded by base_size * max(scales)) plus about `work_bytes`,
    however large the image. Exactly multi_scale_predict's labels when its probabilities fit in
    `work_bytes` (every VOC image, with the default); beyond, see mean_label. uint8 (int64
    beyond 256 classes).
    """
    _check_input(model, image)
    if not scales:
        raise ValueError("scales is empty")
    maps = _scale_probabilities(model, image, scales, base_size, crop, stride_rate, flip, crop_batch, amp)
    return mean_label(maps, image.shape[-2:], work_bytes)


# ----------------------------------------------------------------------------- model preparation
# Folding protocol: any submodule may define `conv_bn_pairs()`, yielding (conv, bn) paths of its
# own submodules (as `get_submodule` takes them) where its forward feeds that conv's output into
# that BatchNorm and nowhere else; exactly those are folded, any other BatchNorm is left as is.
def _conv_bn_pairs(model: torch.nn.Module):
    """(parent, conv path, bn path) for every pair a submodule of `model` declares by
    `conv_bn_pairs()` (the protocol above); pairs already folded (bn an Identity) are skipped.
    A declared pair that is not a Conv2d and a matching BatchNorm with running statistics, or
    shares its conv or BN with another pair, is a TypeError (a wrong declaration).
    """
    seen = {}  # id(conv) -> id(bn): a pair declared twice is folded once
    for name, parent in model.named_modules():
        declare = getattr(parent, "conv_bn_pairs", None)
        if not callable(declare):
            continue
        for conv, bn in declare():
            c, b = parent.get_submodule(conv), parent.get_submodule(bn)
            if isinstance(b, torch.nn.Identity) and isinstance(c, torch.nn.Conv2d):
                continue  # folded by an earlier call
            where = f"{name or type(model).__name__}: declared pair ({conv}, {bn})"
            if not isinstance(c, torch.nn.Conv2d) or not isinstance(b, torch.nn.modules.batchnorm._BatchNorm):
                raise TypeError(f"{where} is a {type(c).__name__} and a {type(b).__name__}, "
                                "not a Conv2d and a BatchNorm")
            if b.running_mean is None or b.running_var is None or c.out_channels != b.num_features:
                raise TypeError(f"{where}: the BatchNorm has no running statistics or "
                                f"{b.num_features} features for {c.out_channels} conv outputs")
            if seen.get(id(c)) == id(b):
                continue
            if id(c) in seen or id(b) in seen.values():
                raise TypeError(f"{where}: that conv or BatchNorm is in another declared pair too")
            seen[id(c)] = id(b)
            yield parent, conv, bn


def _set_submodule(root: torch.nn.Module, path: str, module: torch.nn.Module) -> None:
    owner, _, attr = path.rpartition(".")
    setattr(root.get_submodule(owner) if owner else root, attr, module)


@torch.no_grad()
def prepare_for_inference(model: torch.nn.Module, fold_bn: bool = True,
                          channels_last: bool = True) -> torch.nn.Module:
    """Put `model` in eval mode and make it cheaper to run; predictions are unchanged.

    fold_bn: each conv -> BatchNorm pair the model's modules declare (`conv_bn_pairs()`, the
    protocol above) is folded into the conv's weight and bias (eval-mode BN is an affine map),
    removing one pass over every activation; a model that declares nothing keeps its BNs.
    channels_last: NHWC weights, so the convolutions run in oneDNN's / cuDNN's preferred layout
    (and activations stay NHWC). Both change float rounding only (~1e-6 relative).
    In place, for inference only: the folded model's state_dict no longer has the BN entries,
    so save or load weights before calling this, never after.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()
    if fold_bn:
        for parent, conv, bn in list(_conv_bn_pairs(model)):
            fused = fuse_conv_bn_eval(parent.get_submodule(conv), parent.get_submodule(bn))
            _set_submodule(parent, conv, fused)
            _set_submodule(parent, bn, torch.nn.Identity())
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model
