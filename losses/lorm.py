"""LoRM loss L_LoRM (SPEC §4 step 5): squared distance between the layer4 features x and
their rectified version x' made by the LoRM module (models/lorm.py),

    L_LoRM = sum((x - x')^2) / (number of non-zero terms of (x - x')^2).

Gradients flow into both x (the backbone) and x' (LoRM's projections and gamma).
"""
from __future__ import annotations

import torch
import torch.nn as nn


def lorm_loss(feat: torch.Tensor, feat_rect: torch.Tensor) -> torch.Tensor:
    """Mean of (feat - feat_rect)^2 over its non-zero entries; 0 if they are all zero."""
    # At least float32: under AMP a half-precision sum over B*2048*h*w terms would overflow
    # (float64 stays float64, for exact checks).
    diff = feat - feat_rect
    sq = diff.to(torch.promote_types(diff.dtype, torch.float32)).pow(2)
    return sq.sum() / torch.count_nonzero(sq).clamp_min(1)


class LoRMLoss(nn.Module):
    """weight * L_LoRM."""

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = weight

    def forward(self, feat: torch.Tensor, feat_rect: torch.Tensor) -> torch.Tensor:
        return self.weight * lorm_loss(feat, feat_rect)

    def extra_repr(self) -> str:
        return f"weight={self.weight}"
