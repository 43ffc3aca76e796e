"""Multi-scale sliding-window inference: the paper's evaluation protocol (SPEC §7), batched.

For each scale s the image is resized so its long side is 512*s, padded to at least the crop,
cut into 465x465 windows with stride ceil(465*2/3); the windows go through the network
`crop_batch` at a time, and the softmax of each window's logits (upsampled to the crop) is
averaged where windows overlap. Each scale's probabilities are resized back to the original
size and averaged over scales (and over horizontal flips if asked). eval.py and the demo
notebook both call `multi_scale_predict`.

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
import math
from collections.abc import Sequence

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


@torch.inference_mode()
def multi_scale_predict(model, image: torch.Tensor, scales: Sequence[float] = PAPER_SCALES,
                        base_size: int = 512, crop: int = 465, stride_rate: float = 2 / 3,
                        flip: bool = False, crop_batch: int = 8, amp: bool = False) -> torch.Tensor:
    """Class probabilities (1, C, H, W) at the original size: the paper's protocol (SPEC §7).

    For each scale s the long side becomes int(base_size * s + 0.5) (round half up; the authors
    used Python's round, which only differs on exact .5 ties, never for 512 * the paper's
    scales), the short side keeps the aspect ratio, rounded the same way. Probabilities are
    averaged over scales, and over the image and its mirror if `flip`. argmax gives the label.
    """
    _check_input(model, image)
    if not scales:
        raise ValueError("scales is empty")
    h, w = image.shape[-2:]
    total = None
    n = 0
    for s in scales:
        scaled = _resize(image, scaled_size(h, w, int(base_size * s + 0.5)))
        for mirrored in ((False, True) if flip else (False,)):
            inp = scaled.flip(-1) if mirrored else scaled
            p = predict_scale(model, inp, crop=crop, stride_rate=stride_rate,
                              crop_batch=crop_batch, amp=amp)
            if mirrored:
                p = p.flip(-1)
            p = _resize(p, (h, w))
            total = p if total is None else total + p
            n += 1
    return total / n


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
