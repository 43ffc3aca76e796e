"""Distance entropy loss DEL (SPEC §5): the prediction's entropy, weighted per pixel by a
distance map D (D_s: near the scribble; D_c: away from the pseudo-label's boundary).

    DEL(D) = -sum_pixels (D / 255) * sum_c p_c log p_c  /  #{pixels where that term != 0}

D holds the raw 0..255 map values; it is divided out of place (the authors divided the
batch's map in place). Padded pixels carry D = 0 (datasets pad maps with 0), so they add
nothing and are not counted.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-pixel entropy -sum_c p_c log p_c of softmax(logits) over dim 1, (B, C, H, W) -> (B, H, W).

    From log_softmax: no log(0); a vanishing p_c gives 0 * finite = 0.
    """
    logp = F.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(dim=1)


def distance_entropy(logits: torch.Tensor, dist_map: torch.Tensor) -> torch.Tensor:
    """DEL: logits (B, C, H, W), dist_map (B, H, W) or (B, 1, H, W) with raw values 0..255.

    An all-zero map gives 0 (the count is clamped to 1), not NaN.
    """
    if dist_map.dim() == 4:
        dist_map = dist_map.squeeze(1)
    ent = entropy(logits)
    weighted = ent * (dist_map.to(ent.dtype) / 255.0)
    count = (weighted != 0).sum().clamp_min(1)
    return weighted.sum() / count


class DistanceEntropyLoss(nn.Module):
    """weight * DEL(D)."""

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = weight

    def forward(self, logits: torch.Tensor, dist_map: torch.Tensor) -> torch.Tensor:
        return self.weight * distance_entropy(logits, dist_map)

    def extra_repr(self) -> str:
        return f"weight={self.weight}"
