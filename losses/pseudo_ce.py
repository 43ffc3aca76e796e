"""Pseudo-label cross-entropy L_pseudo (SPEC §5): cross-entropy on the pseudo-label, with
label smoothing 0.1; pixels marked 255 stay ignored.

(The authors' LoRM rewrote the pseudo-label tensor in place, 255 -> 0, before this term ran,
so their ignore pixels were trained as background. Nothing here or in LoRM changes the label.)
"""
from __future__ import annotations

import torch
import torch.nn as nn

from losses.pce import labelled_ce


def pseudo_ce(logits: torch.Tensor, pseudo: torch.Tensor, label_smoothing: float = 0.1,
              ignore_index: int = 255) -> torch.Tensor:
    """Mean over non-ignored pixels of (1 - e) * (-log p_y) + e * mean_c(-log p_c), e = label_smoothing."""
    return labelled_ce(logits, pseudo, ignore_index, label_smoothing)


class PseudoCELoss(nn.Module):
    """weight * L_pseudo."""

    def __init__(self, weight: float = 1.0, label_smoothing: float = 0.1, ignore_index: int = 255):
        super().__init__()
        self.weight = weight
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, pseudo: torch.Tensor) -> torch.Tensor:
        return self.weight * pseudo_ce(logits, pseudo, self.label_smoothing, self.ignore_index)

    def extra_repr(self) -> str:
        return (f"weight={self.weight}, label_smoothing={self.label_smoothing}, "
                f"ignore_index={self.ignore_index}")
