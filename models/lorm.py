"""Localization rectification module, LoRM (SPEC §4), training only.

On layer4 features x (B x C x h x w), with m the pseudo-label foreground mask at feature size:
    q = Conv1x1(x), k = Conv1x1(x)                      (C -> C, bias, Xavier init; no value conv)
    A = softmax_j cos(q_i, k_j)                         (no temperature, over all h*w positions)
    x' = gamma * (m_i * A) x                            (gamma a learnable scalar, init 1)
The loss sum((x - x')^2) / #non-zero terms lives in losses/lorm.py; x' is not fed to the head.

Rows of background queries of m*A are zero, so x' is zero there and only foreground rows need
attention: `LoRM.forward` gathers the foreground positions of each image, attends them against all
positions and scatters the result into zeros. `lorm_reference` is the naive full h*w x h*w matrix,
kept as the oracle for tests and bench/lorm.py. Cosine attention is softmax(q_hat k_hat^T) x with
unit vectors and scale 1: on CUDA a fused kernel (scaled_dot_product_attention) handles the
2048-wide head; on CPU matmul + softmax measured faster (bench/lorm.py), so that is the CPU default.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

# Device type -> use scaled_dot_product_attention for the foreground rows (see module docstring).
FUSED_ATTENTION = {"cuda": True, "cpu": False}


def foreground_mask(pseudo: torch.Tensor, size: int | Sequence[int],
                    ignore_index: int = 255) -> torch.Tensor:
    """SPEC §4 step 1: pseudo-label (B, H, W) -> bool (B, h, w), True where the pseudo-label,
    with ignore (255) read as background, resized to `size` by bilinear interpolation with
    align_corners=True (the authors' resize), is > 0.

    With a crop of 8k+1 pixels this samples input pixel (8i, 8j) for feature (i, j), the centre
    of its receptive field. Does not modify `pseudo` (the authors rewrote 255 -> 0 in place,
    corrupting L_pseudo).
    """
    if pseudo.dim() != 3:
        raise ValueError(f"pseudo-label must be (B, H, W), got shape {tuple(pseudo.shape)}")
    return resize_mask((pseudo > 0) & (pseudo != ignore_index), size)


def resize_mask(fg: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """Bool (B, H, W) -> bool (B, h, w) by SPEC §4's resize: bilinear, align_corners=True, > 0.

    Resizing the binarised map gives the same mask as resizing the label values: both are
    non-negative, so a bilinear mix is > 0 exactly when a neighbour with non-zero weight is.
    """
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(fg.shape[-2:]) == size:
        return fg.to(torch.bool)
    return F.interpolate(fg[:, None].float(), size=size, mode="bilinear", align_corners=True)[:, 0] > 0


class _UnitRows(torch.autograd.Function):
    """v / max(||v||, eps) along `dim`, as F.normalize, but saving only the output and the norms
    (F.normalize also keeps its input alive for backward, a feature-sized tensor) and using fewer
    feature-sized temporaries in backward. Gradient: (g - y <y, g>) / ||v||."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, dim: int) -> torch.Tensor:
        norm = torch.linalg.vector_norm(v, dim=dim, keepdim=True).clamp_min(1e-12)
        y = v / norm
        ctx.save_for_backward(y, norm)
        ctx.dim = dim
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: torch.Tensor):
        y, norm = ctx.saved_tensors
        dot = (g * y).sum(ctx.dim, keepdim=True)
        # (Where the norm was clamped, i.e. v ~ 0, F.normalize's gradient is g / eps instead.)
        return y.mul(dot).neg_().add_(g).div_(norm), None


def _attend(q_hat: torch.Tensor, k_hat: torch.Tensor, v: torch.Tensor, fused: bool,
            temperature: float = 1.0) -> torch.Tensor:
    """softmax(q_hat k_hat^T / temperature) v for unit rows (cosine logits); (n,C), (N,C), (N,C)."""
    if fused:
        # The CPU flash kernel needs contiguous inputs, else SDPA falls back to the math path.
        q, k, v = (t.contiguous()[None, None] for t in (q_hat, k_hat, v))
        return F.scaled_dot_product_attention(q, k, v, scale=1.0 / temperature)[0, 0]
    logits = q_hat @ k_hat.T  # at temperature 1 no division: the paper's bytes, not a rounding of them
    return torch.softmax(logits if temperature == 1.0 else logits / temperature, dim=-1) @ v


def _linear_1x1(tokens: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A 1x1 conv applied to (n, C) rows of positions."""
    return F.linear(tokens, conv.weight.flatten(1), conv.bias)


class LoRM(nn.Module):
    """LoRM on `channels`-channel features: `forward(x, fg_mask) -> x'` (same shape as x).

    State dict keys: query_conv.{weight,bias}, key_conv.{weight,bias}, gamma (shape (1,)).
    `fused`: None picks per device from FUSED_ATTENTION; True/False forces it (bench/lorm.py).
    `temperature` divides the cosine logits; 1 is the paper's formula (an opt-in for ablations).
    `explicit`: compute the explicit (B, hw, hw) matrix instead (lorm_reference, the authors'
    cost; same values): the baseline of the benchmarks.
    """

    def __init__(self, channels: int, fused: bool | None = None, temperature: float = 1.0,
                 explicit: bool = False):
        super().__init__()
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"LoRM temperature must be a positive number, got {temperature!r}")
        self.temperature = float(temperature)
        self.query_conv = nn.Conv2d(channels, channels, 1)
        self.key_conv = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.ones(1))
        self.fused = fused
        self.explicit = bool(explicit)
        for conv in (self.query_conv, self.key_conv):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor, fg_mask: torch.Tensor) -> torch.Tensor:
        """x (B, C, h, w), fg_mask (B, h, w) bool -> x' (B, C, h, w), zero at background positions.

        Only foreground query rows are computed; images are looped over because their foreground
        counts differ (padding to the largest count would only add work). The result is a
        contiguous NCHW tensor, values identical to `lorm_reference`.
        """
        B, C, h, w = x.shape
        if fg_mask.shape != (B, h, w):
            raise ValueError(f"fg_mask must be {(B, h, w)} to match features {tuple(x.shape)}, "
                             f"got {tuple(fg_mask.shape)}")
        if self.explicit:
            return self.forward_reference(x, fg_mask)
        N = h * w
        fused = FUSED_ATTENTION.get(x.device.type, False) if self.fused is None else self.fused
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, C): one row per position, a view of x
        fg = fg_mask.reshape(B, N).to(torch.bool)
        b_idx, p_idx = fg.nonzero(as_tuple=True)  # foreground positions, image by image
        counts = fg.sum(1).tolist()
        # Whole-batch ops, then per-image pieces via split/unbind: indexing x[b] once per image
        # would cost a full-size zero gradient per image in backward.
        q_hat = _UnitRows.apply(_linear_1x1(tokens[b_idx, p_idx], self.query_conv), -1)
        k_hat = _UnitRows.apply(self.key_conv(x).flatten(2), 1).transpose(1, 2)  # (B, N, C)
        rows = [_attend(q, k, v, fused, self.temperature) for q, k, v, n in
                zip(q_hat.split(counts), k_hat.unbind(0), tokens.unbind(0), counts) if n]
        if not rows:
            # No foreground anywhere: x' = 0, but the projections and gamma must still take part
            # in the graph (zero gradient), as in the explicit formula: under DDP a rank whose
            # parameters get no gradient desynchronises from the others. An empty query set
            # against the first image does it without any attention work.
            rows = [_attend(q_hat, k_hat[0], tokens[0], False, self.temperature)]
        src = self.gamma * torch.cat(rows)
        out = src.new_zeros(B, C, N)  # src's dtype: under AMP gamma * src may be promoted
        out[b_idx, :, p_idx] = src  # (n, C) rows into channel columns: x' in x's own layout
        return out.view(B, C, h, w)

    def forward_reference(self, x: torch.Tensor, fg_mask: torch.Tensor) -> torch.Tensor:
        return lorm_reference(x, fg_mask, self.query_conv, self.key_conv, self.gamma, self.temperature)


def lorm_reference(x: torch.Tensor, fg_mask: torch.Tensor, query_conv: nn.Module,
                   key_conv: nn.Module, gamma: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The naive formula x' = gamma * (m_i * A) x with the explicit (B, hw, hw) matrix A."""
    B, C, h, w = x.shape
    q_hat = F.normalize(query_conv(x).flatten(2), dim=1)  # (B, C, N)
    k_hat = F.normalize(key_conv(x).flatten(2), dim=1)
    A = torch.softmax(q_hat.transpose(1, 2) @ k_hat / temperature, dim=-1)  # (B, N queries, N keys)
    mA = fg_mask.reshape(B, -1, 1).to(x.dtype) * A
    return gamma * (x.flatten(2) @ mA.transpose(1, 2)).view(B, C, h, w)
