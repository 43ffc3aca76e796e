"""Segmentation scores (SPEC §7): a C x C confusion matrix (rows = ground truth, columns =
prediction, pixels labelled ignore_index skipped), mIoU, per-class IoU, pixel accuracy, and
the text report and pictures eval.py writes.

Pure torch (torch.bincount); the matrix accumulates on the device and is summed across ranks
under torch.distributed.

A class absent from both the ground truth and the prediction has IoU NaN and is left out of
the mean. (The authors' evaluate.py counted it as IoU 0 over all classes; on VOC val every
class is present, so both give the same mIoU.)
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from utils import dist
from utils.io import atomic_path
from utils.labels import IGNORE_INDEX, label_value_problem


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(C, C) int64 counts: entry [t, p] = pixels of ground-truth class t predicted as p.

    pred and target: integer tensors of the same shape. Target pixels equal to ignore_index
    are skipped; a target value outside 0..C-1 other than ignore_index, or a prediction outside
    0..C-1 on a scored pixel, is a ValueError (utils.labels' rule, as the datasets check it).
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(target.shape)} differ in shape")
    pred = pred.reshape(-1).long()
    target = target.reshape(-1).long()
    problem = label_value_problem(target, num_classes, ignore_index)
    if problem:
        raise ValueError(f"ground truth has {problem}")
    valid = target != ignore_index
    pred, target = pred[valid], target[valid]
    problem = label_value_problem(pred, num_classes, None)  # a prediction has no ignore value
    if problem:
        raise ValueError(f"prediction has {problem} on scored pixels")
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


class ConfusionMeter:
    """Accumulates a confusion matrix on the device of the first update."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX,
                 device: torch.device | str | None = None):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.conf = torch.zeros((num_classes, num_classes), dtype=torch.long,
                                device=device if device is not None else "cpu")
        self._placed = device is not None

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        if not self._placed:
            self.conf = self.conf.to(pred.device)
            self._placed = True
        self.conf += confusion_matrix(pred.to(self.conf.device), target.to(self.conf.device),
                                      self.num_classes, self.ignore_index)

    def all_reduce(self) -> "ConfusionMeter":
        """Sum the matrix over all ranks (no-op unless torch.distributed is initialised)."""
        dist.all_reduce_sum(self.conf)
        return self

    def scores(self) -> dict:
        return scores(self.conf)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    # NaN where the denominator is 0: the quantity is undefined, not 0.
    return torch.where(den > 0, num / den.clamp_min(1), torch.full_like(num, float("nan")))


def _nanmean(x: torch.Tensor) -> float:
    keep = ~torch.isnan(x)
    return float(x[keep].mean()) if keep.any() else float("nan")


def scores(conf: torch.Tensor) -> dict:
    """Scores of a (C, C) confusion matrix (rows = ground truth), as fractions in [0, 1].

    "miou", "pixel_acc", "mean_acc": floats; "iou", "precision", "recall": per-class lists.
    Per-class values are NaN where undefined (IoU: class absent from ground truth and
    prediction; recall: absent from ground truth; precision: never predicted) and means skip
    NaN. mean_acc is the mean per-class recall.
    """
    conf = conf.detach().to("cpu", torch.float64)
    tp = conf.diag()
    gt = conf.sum(1)
    pr = conf.sum(0)
    iou = _ratio(tp, gt + pr - tp)
    recall = _ratio(tp, gt)
    precision = _ratio(tp, pr)
    total = conf.sum()
    return {
        "miou": _nanmean(iou),
        "iou": iou.tolist(),
        "pixel_acc": float(tp.sum() / total) if total > 0 else float("nan"),
        "mean_acc": _nanmean(recall),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
    }


def pct(x: float) -> str:
    """A fraction as a percentage with 2 decimals; n/a for NaN (a class absent from both)."""
    return "n/a" if math.isnan(x) else f"{100 * x:.2f}"


def nan_to_none(obj):
    """NaN is not JSON: an absent class's score becomes null (dicts and lists recursively)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_none(v) for v in obj]
    return obj


def format_report(s: dict, class_names: Sequence[str]) -> str:
    """Plain-text report, percentages with two decimals; 'n/a' marks a class absent from both."""
    width = max(len(n) for n in class_names)
    lines = [
        f"mIoU: {pct(s['miou'])}",
        f"pixel accuracy: {pct(s['pixel_acc'])}",
        f"mean accuracy: {pct(s['mean_acc'])}",
        "per-class IoU:",
    ]
    lines += [f"{name + ':':<{width + 1}} {pct(v)}" for name, v in zip(class_names, s["iou"])]
    return "\n".join(lines) + "\n"


def _figure(size):
    # A bare Figure with an Agg canvas: no pyplot, so the caller's (e.g. a notebook's) backend
    # is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str) -> None:
    fmt = path.rsplit(".", 1)[-1].lower() if "." in path else "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=120, bbox_inches="tight")


def plot_iou_bars(s: dict, class_names: Sequence[str], path: str) -> None:
    """Horizontal bar per class (IoU %), a dashed line at the mIoU; written atomically."""
    iou = np.array(s["iou"], dtype=float) * 100
    fig = _figure((6, 0.28 * len(class_names) + 1.2))
    ax = fig.add_subplot()
    y = np.arange(len(class_names))
    ax.barh(y, np.nan_to_num(iou), color="tab:blue")
    for yi, v in zip(y, iou):
        ax.text((0 if np.isnan(v) else v) + 1, yi, "n/a" if np.isnan(v) else f"{v:.1f}",
                va="center", fontsize=7)
    ax.axvline(100 * s["miou"], color="tab:red", ls="--", lw=1, label=f"mIoU {pct(s['miou'])}")
    ax.set_yticks(y, labels=list(class_names), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 105)
    ax.set_xlabel("IoU (%)")
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)


def plot_confusion(conf: torch.Tensor, class_names: Sequence[str], path: str) -> None:
    """Row-normalised confusion matrix (each ground-truth row sums to 1); written atomically."""
    c = conf.detach().to("cpu", torch.float64).numpy()
    rows = c.sum(1, keepdims=True)
    norm = np.divide(c, rows, out=np.zeros_like(c), where=rows > 0)
    n = len(class_names)
    fig = _figure((0.35 * n + 2, 0.35 * n + 1.5))
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels=list(class_names), rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels=list(class_names), fontsize=7)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    _save(fig, path)
