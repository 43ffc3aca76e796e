"""The paper's ablation in miniature, on the synthetic set: same model, budget and seed for

    (a) scribbles only (partial CE)            (b) + pseudo-label CE
    (c) + DEL on both distance maps            (d) + LoRM (the full method)

    python bench/ablation.py [--out runs/ablation] [--epochs 30] [--seeds 1000]

Each variant trains ResNet-18 DeepLabV2 with train.py exactly as scripts/quickstart.sh does
(only the loss weights differ; LoRM is built only in (d)), then eval.py scores its *last*
checkpoint (no model selection on val) with the quickstart's multi-scale protocol. Prints a
table of val mIoU and writes it to <out>/ablation.md; a change that breaks a component shows
as a row that no longer improves on the one above.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = [  # name, loss weights
    ("(a) scribbles only (pCE)", dict(l_seg=1, l_pseudo=0, l_ds=0, l_dc=0, l_lorm=0)),
    ("(b) + pseudo-label CE", dict(l_seg=1, l_pseudo=1, l_ds=0, l_dc=0, l_lorm=0)),
    ("(c) + DEL(D_s) + DEL(D_c)", dict(l_seg=1, l_pseudo=1, l_ds=1, l_dc=1, l_lorm=0)),
    ("(d) + LoRM (full CDSP)", dict(l_seg=1, l_pseudo=1, l_ds=1, l_dc=1, l_lorm=1)),
]
TRAIN = ["--model_type", "deeplabv2", "--layers", "18", "--pretrained", "none", "--batchsize", "8",
         "--lr", "0.01", "--warmup", "2", "--crop_size", "129", "--workers", "2"]
EVAL = ["--base_size", "160", "--crop_size", "129", "--scales", "0.75", "1.0", "1.25", "--workers", "2"]


def run(cmd: list[str]) -> None:
    p = subprocess.run([sys.executable, *cmd], cwd=REPO, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    if p.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1000])
    ap.add_argument("--data_seed", type=int, default=0)
    a = ap.parse_args()
    out = os.path.abspath(a.out)
    data = os.path.join(out, "data")
    run(["-m", "datasets.synthetic", "--out", data, "--seed", str(a.data_seed)])
    rows = []
    for name, w in VARIANTS:
        mious = []
        for seed in a.seeds:
            tag = f"{name[1]}_s{seed}"
            logdir, save = os.path.join(out, tag), os.path.join(out, tag + "_eval")
            weights = [x for k, v in w.items() for x in (f"--{k}", str(v))]
            run(["train.py", "--dataset_path", data, "--pseudo_path", "pseudo_label", *TRAIN, *weights,
                 "--epochs", str(a.epochs), "--val_interval", str(a.epochs), "--seed", str(seed),
                 "--logdir", logdir])
            run(["eval.py", "--checkpoint_path", os.path.join(logdir, "last_checkpoint.pth"),
                 "--dataset_path", data, "--save_path", save, *EVAL])
            mious.append(100 * json.load(open(os.path.join(save, "metrics.json")))["miou"])
            print(f"{name:30s} seed {seed}: val mIoU {mious[-1]:.2f}", flush=True)
        rows.append((name, mious))
    lines = ["| variant | " + " | ".join(f"seed {s}" for s in a.seeds) + " | mean |",
             "|---|" + "---|" * (len(a.seeds) + 1)]
    for name, m in rows:
        lines.append(f"| {name} | " + " | ".join(f"{x:.2f}" for x in m) + f" | {sum(m) / len(m):.2f} |")
    table = "\n".join(lines)
    with open(os.path.join(out, "ablation.md"), "w") as f:
        f.write(f"val mIoU (%), synthetic set (seed {a.data_seed}), {a.epochs} epochs, last checkpoint\n\n{table}\n")
    print("\n" + table)


if __name__ == "__main__":
    main()
