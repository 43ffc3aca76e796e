"""Seconds per training step and peak memory on CPU: R50 DeepLabV2 with and without LoRM, and
with LoRM when the previous step's outputs stay referenced through the next step.

    python bench/train_step.py [--crop 129] [--batch 2] [--steps 3] [--layers 50]

Each variant runs in a fresh subprocess (peak RSS is per process), on random data with the
full CDSP loss (half the pseudo-label foreground), after one warm-up step; a step is
utils.engine.train_step (forward, loss, the per-step sync and check, backward, SGD), as in
training. "held" keeps each step's outputs (fp32 layer4 and LoRM's x') alive until the next step
has returned, as utils.engine.fit did before it released them. Prints each and the ratios, so
later changes can be compared on this machine.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


VARIANTS = {"plain": "       ", "lorm": "+ LoRM ", "held": "+ LoRM, outputs held a step"}


def one(layers: int, lorm: bool, crop: int, batch: int, steps: int, hold: bool = False) -> dict:
    import torch

    from losses import CDSPLoss
    from models import build_model
    from train import SegmentationTask
    from utils.engine import train_step

    torch.manual_seed(0)
    model = build_model("deeplabv2", layers, 21, lorm=lorm, pretrained=None).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    task = SegmentationTask(model, opt, torch.device("cpu"), None, CDSPLoss(l_lorm=1.0 if lorm else 0.0))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    pseudo = torch.randint(0, 21, (batch, crop, crop))
    pseudo[:, :, : crop // 2] = 0                       # half background
    batch_d = {"image": torch.randn(batch, 3, crop, crop), "scribble": torch.randint(0, 21, (batch, crop, crop)),
               "pseudo": pseudo, "dist_s": torch.rand(batch, crop, crop) * 255,
               "dist_c": torch.rand(batch, crop, crop) * 255}
    times, held = [], None
    for i in range(steps + 1):
        t = time.perf_counter()
        out = train_step(task, scaler, batch_d)            # what utils.engine.fit runs per batch
        held = out if hold else None                       # "held": alive through the next step
        del out
        if i:                                              # the first step is warm-up
            times.append(time.perf_counter() - t)
    return {"s_per_step": sorted(times)[len(times) // 2],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=50)
    ap.add_argument("--crop", type=int, default=129)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--_child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._child:
        print(json.dumps(one(a.layers, a._child != "plain", a.crop, a.batch, a.steps, a._child == "held")))
        return
    res = {}
    for variant, label in VARIANTS.items():
        out = subprocess.run([sys.executable, __file__, "--_child", variant, "--layers", str(a.layers),
                              "--crop", str(a.crop), "--batch", str(a.batch), "--steps", str(a.steps)],
                             check=True, capture_output=True, text=True).stdout
        res[variant] = json.loads(out.strip().splitlines()[-1])
        print(f"R{a.layers} DeepLabV2 {label}  batch {a.batch}, crop {a.crop}: "
              f"{res[variant]['s_per_step']:.3f} s/step, peak RSS {res[variant]['peak_rss_mb']:.0f} MB")
    print(f"LoRM / plain: time {res['lorm']['s_per_step'] / res['plain']['s_per_step']:.2f}x, "
          f"peak memory {res['lorm']['peak_rss_mb'] / res['plain']['peak_rss_mb']:.2f}x")
    print(f"outputs released / held a step: peak memory {res['lorm']['peak_rss_mb'] / res['held']['peak_rss_mb']:.2f}x "
          f"({res['held']['peak_rss_mb'] - res['lorm']['peak_rss_mb']:.0f} MB saved)")


if __name__ == "__main__":
    main()
