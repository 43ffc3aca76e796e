"""The first step of each epoch against the others: persistent loader workers vs restarted ones.

    python bench/epoch_start.py [--epochs 3] [--repeats 1] [--data DIR]

The quickstart recipe (scripts/quickstart.sh's train.py flags: ResNet-18 DeepLabV2 + LoRM, every
CDSP loss, batch 8, crop 97, --workers 2) on the synthetic set (python -m datasets.synthetic
--seed 0, made afresh in --data), for --epochs epochs, once as train.py builds
its loaders (persistent workers) and once with persistent_workers=False forced (workers
restarted at every epoch, the previous behaviour); each run in its own subprocess, the two
alternated --repeats times. A step's time is the wait for its batch (for the first step: from
the epoch's iterator being created, so worker start-up included) plus utils.engine.train_step;
the epoch-end validation, checkpoints and pictures are left out. Prints, per epoch, the first
step, the median of the others and their ratio, then the first-step ratio restarted / persistent.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

QUICKSTART = ["--pseudo_path", "pseudo_label", "--distancemap_c", "distance_pseudo",
              "--model_type", "deeplabv2", "--layers", "18", "--pretrained", "none",
              "--l_seg", "1", "--l_pseudo", "1", "--l_ds", "1", "--l_dc", "1", "--l_lorm", "1",
              "--batchsize", "8", "--lr", "0.01", "--warmup", "2", "--crop_size", "97", "--workers", "2",
              "--val_interval", "5"]
MODES = ("persistent", "restarted")


def child(mode: str, data: str, epochs: int) -> None:
    """One training run with timed steps; prints {"epochs": [[step seconds, ...], ...]}."""
    import torch.utils.data

    import train
    import utils.engine as engine

    if mode == "restarted":  # the loaders as before: workers started at every epoch's iterator
        plain = torch.utils.data.DataLoader

        def restarted(*a, **kw):
            kw["persistent_workers"] = False
            return plain(*a, **kw)
        torch.utils.data.DataLoader = restarted  # what utils.parallel.data_loader builds

    epochs_steps: list[list[float]] = []
    waits: list[float] = []

    class TimedBar:
        """Stands in for fit's tqdm bar: records the wait for each batch."""

        def __init__(self, loader, **_):
            self.loader = loader

        def __iter__(self):
            epochs_steps.append([])
            t = time.perf_counter()
            it = iter(self.loader)  # persistent: reset; restarted: new worker processes
            for batch in it:
                waits.append(time.perf_counter() - t)
                yield batch
                t = time.perf_counter()

        def set_postfix(self, *_a, **_k):
            pass

    step = engine.train_step

    def timed_step(*a, **kw):
        t = time.perf_counter()
        out = step(*a, **kw)
        epochs_steps[-1].append(waits.pop() + time.perf_counter() - t)
        return out

    engine.tqdm, engine.train_step = TimedBar, timed_step
    with tempfile.TemporaryDirectory() as logdir:
        rc = train.main(["--dataset_path", data, "--logdir", logdir, "--epochs", str(epochs), *QUICKSTART])
    if rc != 0:
        raise SystemExit(rc)
    print("RESULT " + json.dumps({"epochs": epochs_steps}))


def run_child(mode: str, data: str, epochs: int) -> list[list[float]]:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", mode, "--data", data,
                          "--epochs", str(epochs)], cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{mode} run failed:\n{out.stderr[-3000:]}")
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line.removeprefix("RESULT "))["epochs"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=1, help="runs of each mode, alternated")
    p.add_argument("--data", default=os.path.join(REPO, "runs", "epoch_start", "data"))
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child, args.data, args.epochs)
    made = subprocess.run([sys.executable, "-m", "datasets.synthetic", "--out", args.data, "--seed", "0"],
                          cwd=REPO, capture_output=True, text=True)  # as the quickstart: made afresh
    if made.returncode != 0:
        sys.exit(f"datasets.synthetic failed:\n{made.stderr[-3000:]}")
    import torch
    print(f"epoch start: quickstart recipe (R18 DeepLabV2 + LoRM, batch 8, crop 97, --workers 2), "
          f"{args.epochs} epochs, {args.repeats} run(s) of each mode; torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    runs = {m: [] for m in MODES}
    for _ in range(args.repeats):
        for mode in MODES:
            runs[mode].append(run_child(mode, args.data, args.epochs))
    first = {}
    for mode in MODES:
        print(f"\n{mode} workers ({len(runs[mode][0][0])} steps per epoch):")
        print("  epoch  first step (s)  median of the others (s)  first / median")
        first[mode] = []
        for e in range(args.epochs):
            f = statistics.median(r[e][0] for r in runs[mode])
            rest = statistics.median(s for r in runs[mode] for s in r[e][1:])
            first[mode].append(f)
            print(f"  {e + 1:5d}  {f:14.3f}  {rest:24.3f}  {f / rest:14.2f}x")
    print("\nfirst step, restarted / persistent:  "
          + "  ".join(f"epoch {e + 1}: {first['restarted'][e] / first['persistent'][e]:.2f}x"
                      for e in range(args.epochs)))
    later = range(1, args.epochs)
    if later:
        saved = statistics.mean(first["restarted"][e] - first["persistent"][e] for e in later)
        print(f"epochs 2-{args.epochs}: {saved:.2f} s saved per epoch start by persistent workers")


if __name__ == "__main__":
    main()
