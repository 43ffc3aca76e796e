"""Training logs people look at: metrics.csv, a PNG of the curves, TensorBoard, the resolved config."""
from __future__ import annotations

import csv
import io
import json
import os

import numpy as np

from utils.io import OutputError, atomic_path


def save_config(args: dict, logdir: str) -> str:
    path = os.path.join(logdir, "config.json")
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(args, f, indent=2, sort_keys=True)
    return path


class MetricsLog:
    """One row per epoch in metrics.csv (rewritten whole, so resuming keeps one consistent file),
    the same rows drawn as curves.png, and every scalar mirrored to TensorBoard."""

    def __init__(self, logdir: str, tensorboard: bool = True, val_key: str = "val_miou",
                 val_title: str = "val mIoU (%)"):
        self.logdir = logdir
        self.val_key, self.val_title = val_key, val_title  # the validation column drawn
        self.csv_path = os.path.join(logdir, "metrics.csv")
        self.png_path = os.path.join(logdir, "curves.png")
        self.rows: list[dict] = []
        if os.path.isfile(self.csv_path):
            try:
                with open(self.csv_path, newline="", encoding="utf-8") as f:
                    reader = csv.DictReader(f)
                    self.rows = [{k: _num(v) for k, v in r.items()} for r in reader]
                    ours = reader.fieldnames is not None and "epoch" in reader.fieldnames
            except (OSError, ValueError, csv.Error) as e:
                raise OutputError(f"{self.csv_path}: cannot read it ({e})") from None
            if not ours or any(not isinstance(r.get("epoch"), int) for r in self.rows):
                raise OutputError(f"{self.csv_path}: not a metrics.csv written by a training run (no "
                                  f"whole 'epoch' column); move it, or choose another --logdir")
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(os.path.join(logdir, "tb"))

    def truncate(self, epoch: int) -> None:
        """Forget rows after `epoch` (a resumed run redoes them)."""
        self.rows = [r for r in self.rows if r["epoch"] <= epoch]

    def scalars(self, values: dict, step: int) -> None:
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, float(v), step)

    def image(self, tag: str, hwc_uint8: np.ndarray, step: int) -> None:
        if self.tb is not None:
            self.tb.add_image(tag, hwc_uint8, step, dataformats="HWC")

    def epoch_row(self, row: dict) -> None:
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        with atomic_path(self.csv_path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.rows)
        self.plot()

    def plot(self) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        loss_keys = [k for k in self.rows[-1] if k.startswith("loss_")]
        ep = [r["epoch"] for r in self.rows]
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        for k in loss_keys:
            axes[0].plot(ep, [r.get(k, np.nan) for r in self.rows], marker=".", label=k[5:])
        axes[0].set(title="training loss terms (epoch mean)", xlabel="epoch", yscale="log")
        axes[0].legend(fontsize=8)
        axes[1].plot(ep, [r.get("lr", np.nan) for r in self.rows], marker=".")
        axes[1].set(title="learning rate (end of epoch)", xlabel="epoch")
        k = self.val_key
        val = [(r["epoch"], r[k]) for r in self.rows if not np.isnan(r.get(k, np.nan))]
        if val:
            axes[2].plot(*zip(*val), marker="o", color="C3")
        axes[2].set(title=self.val_title, xlabel="epoch")
        for a in axes:
            a.grid(alpha=0.3)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        with atomic_path(self.png_path) as tmp, open(tmp, "wb") as f:
            f.write(buf.getvalue())

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _num(v: str):
    try:
        f = float(v)
        return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f
    except (TypeError, ValueError):
        return v
