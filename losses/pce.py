"""Partial cross-entropy L_pCE (SPEC §5): cross-entropy on the scribbled pixels only.

`labelled_ce` is the one masked cross-entropy of the package; the pseudo-label term
(losses/pseudo_ce.py) is the same function with label smoothing.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def labelled_ce(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255,
                label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over the pixels whose target is not `ignore_index`.

    logits (B, C, H, W), target (B, H, W) integer. With no labelled pixel the loss is 0 (not
    the NaN of F.cross_entropy's 0/0) and its gradient is 0: an image whose crop caught no
    scribble contributes nothing. Sum / count instead of reduction="mean" keeps it sync-free.
    """
    target = target.long()  # a new tensor when the label arrives as uint8; never in place
    total = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum",
                            label_smoothing=label_smoothing)
    count = (target != ignore_index).sum().clamp_min(1)
    return total / count


def partial_ce(logits: torch.Tensor, scribble: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """L_pCE: cross-entropy on scribble pixels (255 = unlabelled is ignored); 0 if none."""
    return labelled_ce(logits, scribble, ignore_index)


class PartialCELoss(nn.Module):
    """weight * L_pCE."""

    def __init__(self, weight: float = 1.0, ignore_index: int = 255):
        super().__init__()
        self.weight = weight
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, scribble: torch.Tensor) -> torch.Tensor:
        return self.weight * partial_ce(logits, scribble, self.ignore_index)

    def extra_repr(self) -> str:
        return f"weight={self.weight}, ignore_index={self.ignore_index}"
