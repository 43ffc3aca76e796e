"""The CDSP training loss (SPEC §5), one paper term per file:

    L = l_seg * L_pCE + l_pseudo * L_pseudo + l_ds * DEL(D_s) + l_dc * DEL(D_c) + l_lorm * L_LoRM

losses/pce.py (L_pCE), losses/pseudo_ce.py (L_pseudo), losses/distance_entropy.py (DEL),
losses/lorm.py (L_LoRM). `CDSPLoss` adds them up; a term whose weight is 0 is neither
computed nor given its inputs, and `required_fields()` tells the dataset what to read.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from datasets.layout import TRAIN_FIELDS
from losses.distance_entropy import DistanceEntropyLoss, distance_entropy, entropy
from losses.lorm import LoRMLoss, lorm_loss
from losses.pce import PartialCELoss, labelled_ce, partial_ce
from losses.pseudo_ce import PseudoCELoss, pseudo_ce
from utils.inference import upsample_logits

__all__ = [
    "CDSPLoss", "PartialCELoss", "PseudoCELoss", "DistanceEntropyLoss", "LoRMLoss",
    "partial_ce", "pseudo_ce", "distance_entropy", "entropy", "lorm_loss", "labelled_ce",
]



def _need(container: dict, key: str, what: str, why: str) -> torch.Tensor:
    if key not in container:
        raise KeyError(f"{what} has no '{key}', needed by {why}")
    return container[key]


class CDSPLoss(nn.Module):
    """Total CDSP loss. forward(outputs, batch) -> (total, terms).

    outputs: the model's dict: "out" = logits at feature stride (upsampled here to the label
    size, bilinear with align_corners=True, the convention shared with utils/inference.py);
    "feat" and "feat_rect" (layer4 features and LoRM's rectification) when l_lorm > 0.
    batch: "scribble", "pseudo" (B, H, W) integer labels, 255 = ignore; "dist_s", "dist_c"
    (B, H, W) raw 0..255 distance maps. Only the fields of non-zero terms are read.
    terms: the weighted value of each computed term under "pce", "pseudo", "del_s", "del_c",
    "lorm" (zero-weight terms are absent), and "total" = their sum (the returned total).
    Nothing passed in is modified.
    """

    def __init__(self, l_seg: float = 1.0, l_pseudo: float = 1.0, l_ds: float = 1.0,
                 l_dc: float = 1.0, l_lorm: float = 1.0, label_smooth: float = 0.1,
                 ignore_index: int = 255):
        super().__init__()
        if not any((l_seg, l_pseudo, l_ds, l_dc, l_lorm)):
            raise ValueError("every loss weight is 0: nothing to train")
        self.pce = PartialCELoss(l_seg, ignore_index)
        self.pseudo = PseudoCELoss(l_pseudo, label_smooth, ignore_index)
        self.del_s = DistanceEntropyLoss(l_ds)
        self.del_c = DistanceEntropyLoss(l_dc)
        self.lorm = LoRMLoss(l_lorm)

    @property
    def uses_lorm(self) -> bool:
        """True when the model must return "feat"/"feat_rect" (build it with LoRM on)."""
        return self.lorm.weight != 0

    def required_fields(self) -> tuple[str, ...]:
        """Dataset fields the non-zero terms read, the image always first (the model's own
        training inputs, e.g. the pseudo-label LoRM needs, are DeepLab.training_inputs)."""
        need = {"image"}
        if self.pce.weight:
            need.add("scribble")
        if self.pseudo.weight:
            need.add("pseudo")
        if self.del_s.weight:
            need.add("dist_s")
        if self.del_c.weight:
            need.add("dist_c")
        return tuple(f for f in TRAIN_FIELDS if f in need)  # the datasets' field order

    def forward(self, outputs: dict, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # (term name, module, batch field) of the per-pixel terms on the upsampled logits
        pixel_terms = [(name, mod, field) for name, mod, field in (
            ("pce", self.pce, "scribble"), ("pseudo", self.pseudo, "pseudo"),
            ("del_s", self.del_s, "dist_s"), ("del_c", self.del_c, "dist_c"),
        ) if mod.weight]
        terms: dict[str, torch.Tensor] = {}
        if pixel_terms:
            targets = {f: _need(batch, f, "batch", f"the '{n}' loss term") for n, _, f in pixel_terms}
            size = next(iter(targets.values())).shape[-2:]
            logits = upsample_logits(_need(outputs, "out", "model output", "the loss"), size)
            for name, mod, field in pixel_terms:
                terms[name] = mod(logits, targets[field])
        if self.lorm.weight:
            why = "the LoRM loss (l_lorm > 0): build the model with LoRM on"
            terms["lorm"] = self.lorm(_need(outputs, "feat", "model output", why),
                                      _need(outputs, "feat_rect", "model output", why))
        total = sum(terms.values())
        terms["total"] = total
        return total, terms
