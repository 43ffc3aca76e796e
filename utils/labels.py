"""The one rule for label values (SPEC §1): a label map holds class indices 0..C-1 and the
ignore value 255 (unlabelled scribble pixels, the masks' void band, pseudo-labels' unsure
pixels), nothing else. A prediction has no ignore value: 0..C-1 only.

Pure and numpy/torch-agnostic (no torch import, no datasets import), so utils.metrics and the
datasets modules apply the same rule: datasets.layout.check_label_values wraps it with the
file name and DatasetError.
"""
from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255
SHOWN = 8  # offending values listed in a message; the rest are "..."


def invalid_label_mask(labels, num_classes: int, ignore_index: int | None = IGNORE_INDEX):
    """Elementwise True where a value breaks the rule: outside 0..num_classes-1 and not
    `ignore_index` (None: no ignore value is allowed). `labels`: numpy array or torch tensor."""
    bad = (labels < 0) | (labels >= num_classes)
    if ignore_index is not None:
        bad &= labels != ignore_index
    return bad


def allowed_values(num_classes: int, ignore_index: int | None = IGNORE_INDEX) -> str:
    """The rule in words: '0..20 (21 classes) and 255 (ignore)'."""
    text = f"0..{num_classes - 1} ({num_classes} classes)"
    return text if ignore_index is None else f"{text} and {ignore_index} (ignore)"


def label_value_problem(labels, num_classes: int, ignore_index: int | None = IGNORE_INDEX,
                        what: str = "label") -> str | None:
    """None if every value of `labels` (numpy array or torch tensor) keeps the rule, else e.g.
    "label values [21, 30, 254] (3 pixels) outside 0..20 (21 classes) and 255 (ignore)"."""
    bad = invalid_label_mask(labels, num_classes, ignore_index)
    if not bad.any():
        return None
    found = labels[bad]
    values = (np.unique(found) if isinstance(found, np.ndarray) else found.unique()).tolist()
    shown = ", ".join(map(str, values[:SHOWN])) + (", ..." if len(values) > SHOWN else "")
    n = int(bad.sum())
    return (f"{what} values [{shown}] ({n} pixel{'s' if n != 1 else ''}) outside "
            f"{allowed_values(num_classes, ignore_index)}")
