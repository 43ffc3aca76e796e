"""Segmentation scores (SPEC §7): a C x C confusion matrix (rows = ground truth, columns =
prediction, pixels labelled ignore_index skipped), mIoU, per-class IoU, pixel accuracy, and
the text report and pictures eval.py writes; and the medical field's per-case scores (SPEC
§10): Dice, HD95 and ASSD per structure and case (`case_scores`), summarised over cases as
mean ± std (`CaseTable`), chosen by a dataset.yaml's `metrics`.

Pure torch (torch.bincount); the matrix accumulates on the device and is summed across ranks
under torch.distributed.

A class absent from both the ground truth and the prediction has IoU NaN and is left out of
the mean. (The authors' evaluate.py counted it as IoU 0 over all classes; on VOC val every
class is present, so both give the same mIoU.)
"""
from __future__ import annotations

import csv
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


# ----------------------------------------------------------------------------- per-case metrics
# The field's scores (WSL4MIS test_2D_fully.py: medpy.metric.binary dc / hd95 / asd, SPEC §10),
# computed here with medpy's exact definitions (tests/test_metrics.py compares them):
#   surface(M) = M XOR erosion(M) by the face-connected cross, outside the array counting as
#                background (so a structure touching the array's edge has a surface there);
#   d(A -> B)  = for each surface voxel of A, the Euclidean distance (in `spacing` units) to
#                the nearest surface voxel of B;
#   Dice = 2|A ∩ B| / (|A| + |B|);  HD95 = 95th percentile (numpy's linear) of d(A->B) ∪ d(B->A);
#   ASSD = mean of d(A->B) ∪ d(B->A) (medpy 0.5's pooled mean);  ASD = mean d(pred -> truth) (medpy's `asd`,
#   the one-directional figure WSL4MIS reports as "ASD").
# Conventions where medpy has none (it raises for an empty mask; WSL4MIS's val_2D.py returns
# Dice 0, HD95 0 for an empty prediction, which flatters HD95), each counted per class:
#   absent (in neither truth nor prediction): every score NaN, left out of the means (medpy's
#       dc would say 1.0);
#   missed (in the truth, not predicted) and spurious (predicted, not in the truth): Dice 0;
#       HD95 / ASSD / ASD undefined: NaN, left out of their means, and the count is reported
#       beside them, so a method cannot hide a missed structure behind a good HD95.
CASE_NOTES = ("absent", "missed", "spurious")
SURFACE_METRICS = ("hd95", "assd", "asd")


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_erosion, generate_binary_structure
    return mask ^ binary_erosion(mask, structure=generate_binary_structure(mask.ndim, 1), iterations=1)


def _distances(src: np.ndarray, dst: np.ndarray, spacing) -> np.ndarray:
    """d(src -> dst) for surface masks, on the bounding box of both (the same distances as on
    the whole array: every surface voxel lies in the box; much less work for small structures)."""
    from scipy.ndimage import distance_transform_edt
    both = src | dst
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(both))
    return distance_transform_edt(~dst[box], sampling=spacing)[src[box]]


def binary_scores(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None = None) -> dict:
    """Dice, HD95, ASSD, ASD of one structure (boolean arrays, 2-D or 3-D, same shape) and which
    convention applied ("note": "", or one of CASE_NOTES). `spacing`: the voxel size per axis,
    (z, y, x) for a (slices, H, W) volume; None: 1 (pixel / voxel units)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {truth.shape} differ in shape")
    if spacing is not None:
        spacing = np.asarray(spacing, np.float64)
        if spacing.shape != (pred.ndim,) or not np.all(spacing > 0):
            raise ValueError(f"spacing must be {pred.ndim} positive numbers, got {list(spacing)}")
    n_pred, n_truth = int(np.count_nonzero(pred)), int(np.count_nonzero(truth))
    nan = float("nan")
    if not n_pred or not n_truth:
        note = "absent" if not (n_pred or n_truth) else ("missed" if n_truth else "spurious")
        return {"dice": nan if note == "absent" else 0.0, "hd95": nan, "assd": nan, "asd": nan, "note": note}
    dice = 2.0 * np.count_nonzero(pred & truth) / float(n_pred + n_truth)
    sp, st = _surface(pred), _surface(truth)
    d_pt, d_tp = _distances(sp, st, spacing), _distances(st, sp, spacing)
    return {"dice": dice, "hd95": float(np.percentile(np.hstack((d_pt, d_tp)), 95)),
            "assd": float(np.concatenate((d_pt, d_tp)).mean()), "asd": float(d_pt.mean()), "note": ""}


def scored_classes(num_classes: int, background: int | None = 0) -> list[int]:
    """The structures the field scores: every class but the background (all if there is none)."""
    return [c for c in range(num_classes) if c != background]


def case_scores(pred: np.ndarray, truth: np.ndarray, classes: Sequence[int],
                spacing: Sequence[float] | None = None, ignore_index: int = IGNORE_INDEX) -> dict[int, dict]:
    """{class: binary_scores(pred == c, truth == c)} for one case (an image, or a volume of
    stacked slices). Truth pixels equal to `ignore_index` are left out of both masks."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {truth.shape} differ in shape")
    scored = truth != ignore_index
    return {int(c): binary_scores((pred == c) & scored, truth == c, spacing) for c in classes}


CASES_CSV_HEAD = "case,class,dice"  # how a per-case CSV of ours starts (CaseTable.write_csv)


class CaseTable:
    """Per-case scores of a split (`add` one case at a time: only the numbers are kept), their
    mean ± sample std over cases per class and metric (NaN left out, the number used given), the
    convention counts, the per-case CSV and a text report."""

    def __init__(self, class_names: Sequence[str], classes: Sequence[int], metrics: Sequence[str],
                 unit: str = "px"):
        self.names, self.classes = list(class_names), [int(c) for c in classes]
        self.metrics, self.unit = list(metrics), unit
        self.rows: list[tuple[str, int, dict]] = []

    def add(self, case: str, scores: dict[int, dict]) -> None:
        for c in self.classes:
            self.rows.append((case, c, scores[c]))

    @property
    def cases(self) -> int:
        return len(dict.fromkeys(case for case, _, _ in self.rows))

    def summary(self) -> dict:
        """{metric: {class name: {"mean", "std", "n"}, "mean": mean over classes of the class
        means}, "notes": {class name: {note: count}}, "cases", "unit"} (NaN where undefined)."""
        out: dict = {"cases": self.cases, "unit": self.unit, "notes": {}}
        for m in self.metrics:
            per = {}
            for c in self.classes:
                vals = np.array([r[m] for _, k, r in self.rows if k == c], np.float64)
                vals = vals[~np.isnan(vals)]
                per[self.names[c]] = {"mean": float(vals.mean()) if len(vals) else float("nan"),
                                      "std": float(vals.std(ddof=1)) if len(vals) > 1 else float("nan"),
                                      "n": int(len(vals))}
            means = np.array([v["mean"] for v in per.values()])
            out[m] = {**per, "mean": float(np.nanmean(means)) if (~np.isnan(means)).any() else float("nan")}
        for c in self.classes:
            notes = [r["note"] for _, k, r in self.rows if k == c]
            out["notes"][self.names[c]] = {n: notes.count(n) for n in CASE_NOTES}
        return out

    def write_csv(self, path: str) -> None:
        """One row per (case, class): every score (empty where undefined) and the convention met."""
        with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(CASES_CSV_HEAD.split(",") + list(SURFACE_METRICS) + ["note"])
            for case, c, r in self.rows:
                vals = [r[m] for m in ("dice", *SURFACE_METRICS)]
                w.writerow([case, self.names[c], *("" if math.isnan(v) else f"{v:.6g}" for v in vals), r["note"]])

    def report(self, summary: dict | None = None) -> str:
        """Mean ± std over cases per class (Dice in %, distances in the unit), then the counts."""
        s = summary or self.summary()
        width = max(len(self.names[c]) for c in self.classes + [0]) + 1
        head = f"{'class':<{width}}" + "".join(f" {_title(m, s['unit']):>18}" for m in self.metrics)
        lines = [f"per-case scores over {s['cases']} case(s): mean ± std (sample), n = cases with the score defined",
                 head]
        for c in self.classes:
            name = self.names[c]
            lines.append(f"{name:<{width}}" + "".join(f" {_cell(s[m][name], m):>18}" for m in self.metrics))
        lines.append(f"{'mean':<{width}}" + "".join(f" {_num(s[m]['mean'], m):>18}" for m in self.metrics))
        notes = "; ".join(f"{name}: " + ", ".join(f"{n} {k}" for k, n in s["notes"][name].items() if n)
                          for name in s["notes"] if any(s["notes"][name].values()))
        lines.append("conventions: absent = in neither (all n/a); missed / spurious = in only the truth / "
                     "only the prediction (Dice 0, distances n/a): " + (notes or "none met"))
        return "\n".join(lines) + "\n"


def _title(metric: str, unit: str) -> str:
    return "Dice (%)" if metric == "dice" else f"{metric.upper()} ({unit})"


def _num(v: float, metric: str) -> str:
    return "n/a" if math.isnan(v) else (f"{100 * v:.2f}" if metric == "dice" else f"{v:.2f}")


def _cell(v: dict, metric: str) -> str:
    scale = 100 if metric == "dice" else 1
    std = "n/a" if math.isnan(v["std"]) else f"{scale * v['std']:.2f}"
    return f"{_num(v['mean'], metric)} ± {std} ({v['n']})"


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
