"""The paper's ablation in miniature, on the synthetic set, as a distribution over seeds:

    (a) scribbles only (partial CE)            (b) + pseudo-label CE
    (c) + DEL on both distance maps            (d) + LoRM (the full method)

    python bench/ablation.py --seeds 5                    # (a)-(d), seeds 1000..1004
    python bench/ablation.py --seeds 5 --variants d_t10 c_init d_init   # the LoRM probes
    python bench/ablation.py --report                     # print + plot what the JSON holds
    python bench/ablation.py --compare BEFORE.json AFTER.json   # two sweeps (a code change), paired

Each run trains ResNet-18 DeepLabV2 with train.py exactly as scripts/quickstart.sh does (only
the loss weights differ; LoRM is built only where l_lorm > 0), then eval.py scores it with the
quickstart's multi-scale protocol twice: the *last* checkpoint (the ablation's figure: no model
selection on val) and the *best* one (what the quickstart prints). The same seed gives the
same run on one machine, so the variants are compared paired, seed by seed: for each difference
the mean, a 95 % Student-t interval over the seeds and how many seeds favour each side.

Probes of LoRM (issue: d - c is negative on this set), each paired with its own baseline:
    d_t10   (d) with LoRM's cosine logits divided by a temperature 0.1 (sharper attention)
    c_init, d_init   (c), (d) with the backbone initialised from the stage-1 CAM classifier
            (make_pseudo_labels.py train, the quickstart's PSEUDO=cam recipe, trained once
            on the same train split) instead of random weights

Writes bench/results/ablation.json (every run; the machine and commit) after each run, so a
killed sweep resumes from the runs already there, and bench/results/ablation.png.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

CORE = ["a", "b", "c", "d"]
WEIGHTS = {  # loss weights per core variant
    "a": dict(l_seg=1, l_pseudo=0, l_ds=0, l_dc=0, l_lorm=0),
    "b": dict(l_seg=1, l_pseudo=1, l_ds=0, l_dc=0, l_lorm=0),
    "c": dict(l_seg=1, l_pseudo=1, l_ds=1, l_dc=1, l_lorm=0),
    "d": dict(l_seg=1, l_pseudo=1, l_ds=1, l_dc=1, l_lorm=1),
}
LABELS = {
    "a": "(a) scribbles only (pCE)", "b": "(b) + pseudo-label CE", "c": "(c) + DEL(D_s) + DEL(D_c)",
    "d": "(d) + LoRM (full CDSP)", "d_t10": "(d), LoRM temperature 0.1",
    "c_init": "(c), stage-1 backbone", "d_init": "(d), stage-1 backbone",
}
# variant -> (core variant whose weights it uses, extra train.py flags; STAGE1 = the backbone file)
STAGE1 = "<stage1>"
VARIANTS = {**{v: (v, []) for v in CORE}, "d_t10": ("d", ["--lorm_temperature", "0.1"]),
            "c_init": ("c", ["--pretrained", STAGE1]), "d_init": ("d", ["--pretrained", STAGE1])}
# paired differences reported (when both sides have runs)
DIFFS = [("b", "a"), ("c", "b"), ("d", "c"), ("d", "b"),
         ("d_t10", "d"), ("d_t10", "c"), ("c_init", "c"), ("d_init", "d"), ("d_init", "c_init")]

# The quickstart's recipe (scripts/quickstart.sh): train.py and eval.py flags.
TRAIN = ["--model_type", "deeplabv2", "--layers", "18", "--pretrained", "none", "--batchsize", "8",
         "--lr", "0.01", "--warmup", "2", "--crop_size", "97", "--workers", "2", "--val_interval", "5"]
EVAL = ["--base_size", "160", "--crop_size", "129", "--scales", "0.75", "1.0", "1.25", "--workers", "2"]
CAM_TRAIN = ["--layers", "18", "--pretrained", "none", "--output_stride", "8", "--crop_size", "160",
             "--batchsize", "8", "--lr", "0.1", "--workers", "2", "--epochs", "30"]


def run(cmd: list[str]) -> None:
    p = subprocess.run([sys.executable, *cmd], cwd=REPO, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    if p.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr[-3000:]}")


# ----------------------------------------------------------------------------- statistics
def t_quantile(df: int, q: float = 0.975) -> float:
    from scipy.stats import t
    return float(t.ppf(q, df))


def summary(xs: list[float]) -> dict:
    n = len(xs)
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else float("nan")
    return {"n": n, "mean": mean, "std": std, "min": min(xs), "max": max(xs)}


def paired(hi: dict[int, float], lo: dict[int, float]) -> dict | None:
    """hi - lo over the seeds both have: mean, 95 % t interval, seeds favouring each side."""
    seeds = sorted(set(hi) & set(lo))
    if len(seeds) < 2:
        return None
    d = [hi[s] - lo[s] for s in seeds]
    s = summary(d)
    half = t_quantile(len(d) - 1) * s["std"] / math.sqrt(len(d))
    return {**s, "ci95": [s["mean"] - half, s["mean"] + half],
            "favour_first": sum(x > 0 for x in d), "favour_second": sum(x < 0 for x in d)}


def pending(runs: list[dict], first_seed: int, seeds: int, variants) -> list[tuple[str, int]]:
    """(variant, seed) pairs not yet in `runs`, seed-major: a partial sweep is still paired."""
    done = {(r["variant"], r["seed"]) for r in runs}
    return [(v, s) for s in range(first_seed, first_seed + seeds) for v in variants if (v, s) not in done]


def by_variant(runs: list[dict], key: str = "miou_last") -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for r in runs:
        out.setdefault(r["variant"], {})[r["seed"]] = r[key]
    return out


def report(doc: dict) -> str:
    runs = by_variant(doc["runs"])
    order = [v for v in VARIANTS if v in runs]
    lines = ["val mIoU (%), last checkpoint, multi-scale eval; mean ± sample std over seeds",
             f"{'variant':32s} {'n':>2s} {'mean':>6s} {'std':>5s} {'min':>6s} {'max':>6s}"]
    for v in order:
        s = summary(list(runs[v].values()))
        lines.append(f"{LABELS[v]:32s} {s['n']:2d} {s['mean']:6.2f} {s['std']:5.2f} {s['min']:6.2f} {s['max']:6.2f}")
    best = by_variant(doc["runs"], "miou_best").get("d")
    if best:
        s = summary(list(best.values()))
        lines.append(f"{'(d), best checkpoint (quickstart)':32s} {s['n']:2d} {s['mean']:6.2f} {s['std']:5.2f} "
                     f"{s['min']:6.2f} {s['max']:6.2f}")
    lines += ["", "paired differences (points of mIoU), 95 % t interval over the seeds",
              f"{'difference':18s} {'n':>2s} {'mean':>6s} {'95 % CI':>17s}  seeds favouring first / second"]
    for hi, lo in DIFFS:
        if hi in runs and lo in runs and (p := paired(runs[hi], runs[lo])):
            lines.append(f"{hi + ' - ' + lo:18s} {p['n']:2d} {p['mean']:+6.2f} "
                         f"[{p['ci95'][0]:+6.2f}, {p['ci95'][1]:+6.2f}]  {p['favour_first']} / {p['favour_second']}")
    return "\n".join(lines)


def compare(before: dict, after: dict) -> str:
    """Two sweeps of the same recipe (e.g. before and after a code change), paired by variant
    and seed: each side's distribution, the paired mIoU difference, and the time ratios."""
    figures = (("miou_last", "val mIoU, last"), ("miou_best", "val mIoU, best"),
               ("train_s", "train.py (s)"), ("wall_s", "train + 2 evals (s)"))
    sides = {key: (by_variant(before["runs"], key), by_variant(after["runs"], key)) for key, _ in figures}
    lines = [f"before: {before['meta'].get('git_commit', '?')[:9]}   after: {after['meta'].get('git_commit', '?')[:9]}",
             f"{'variant / figure':44s} {'n':>2s} {'before':>14s} {'after':>14s} {'after - before, 95 % CI':>31s}"]
    for v in [v for v in VARIANTS if v in sides["miou_last"][0] and v in sides["miou_last"][1]]:
        for key, what in figures:
            b, a = (side[v] for side in sides[key])
            seeds = sorted(set(a) & set(b))
            if len(seeds) < 2:
                continue
            sb, sa = summary([b[s] for s in seeds]), summary([a[s] for s in seeds])
            label = f"{LABELS[v] + ', ' + what:44s} {len(seeds):2d}"
            if key.startswith("miou"):
                p = paired(a, b)
                lines.append(f"{label} {sb['mean']:6.2f} ± {sb['std']:5.2f} {sa['mean']:6.2f} ± {sa['std']:5.2f} "
                             f"{p['mean']:+7.2f} [{p['ci95'][0]:+6.2f}, {p['ci95'][1]:+6.2f}]  "
                             f"{p['favour_first']} / {p['favour_second']}")
            else:  # times: the per-seed ratio, averaged (and its interval) on the log scale
                r = paired({s: math.log(a[s] / b[s]) for s in seeds}, {s: 0.0 for s in seeds})
                lines.append(f"{label} {sb['mean']:14.1f} {sa['mean']:14.1f}   ratio {math.exp(r['mean']):.3f}x "
                             f"[{math.exp(r['ci95'][0]):.3f}, {math.exp(r['ci95'][1]):.3f}]")
    lines.append("mIoU: mean ± sample std; differences paired by seed, seeds favouring after / before; "
                 "times: geometric mean of the per-seed ratio after / before")
    return "\n".join(lines)


def plot(doc: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = by_variant(doc["runs"])
    order = [v for v in VARIANTS if v in runs]
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(order), 4.2))
    for i, v in enumerate(order):
        ys = list(runs[v].values())
        ax.scatter([i] * len(ys), ys, color="tab:blue", alpha=0.7, zorder=3)
        ax.hlines(sum(ys) / len(ys), i - 0.25, i + 0.25, color="tab:red", lw=2, zorder=4)
    ax.set_xticks(range(len(order)), [LABELS[v].replace(" (", "\n(").replace(", ", ",\n") for v in order],
                  fontsize=8)
    ax.set_ylabel("val mIoU (%), last checkpoint")
    ax.set_title(f"synthetic-set ablation: each dot a seed, red the mean ({doc['meta']['git_commit'][:8]})",
                 fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    from utils.io import atomic_path
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


# ----------------------------------------------------------------------------- the sweep
def machine() -> dict:
    import torch
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    return {"git_commit": commit + ("-dirty" if dirty else ""), "torch": torch.__version__,
            "python": platform.python_version(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}


def save(doc: dict, path: str) -> None:
    from utils.io import atomic_path
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(doc, f, indent=1)


def run_pending(doc: dict, todo: list[tuple[str, int]], path: str, desc: str, one, line) -> None:
    """Run each pending (variant, seed) with `one(v, s)`, saving the JSON after every run (a
    killed sweep resumes from it) and printing `line(v, s, run)` under the progress bar."""
    from tqdm import tqdm
    for v, s in tqdm(todo, desc=desc, unit="run"):
        r = one(v, s)
        doc["runs"].append(r)
        save(doc, path)
        tqdm.write(line(v, s, r))


def stage1_backbone(out: str, data: str) -> str:
    """Train the quickstart's stage-1 classifier once; export its backbone for --pretrained."""
    path = os.path.join(out, "stage1_backbone.pth")
    if os.path.isfile(path):
        return path
    import torch
    from models.cam import build_cam_net
    logdir = os.path.join(out, "stage1")
    shutil.rmtree(logdir, ignore_errors=True)  # our own, from a killed run (train.py refuses a used log dir)
    run(["-m", "datasets.class_labels", "--root", data])
    run(["make_pseudo_labels.py", "train", "--dataset_path", data, "--logdir", logdir, *CAM_TRAIN])
    from utils.checkpoint import load_checkpoint
    state = load_checkpoint(os.path.join(logdir, "last_checkpoint.pth"), map_location="cpu")["state_dict"]
    net = build_cam_net(18, state["classifier.weight"].shape[0], "none", 8)
    net.load_state_dict(state)
    from utils.io import atomic_path
    with atomic_path(path) as tmp:
        torch.save(net.backbone_state_dict(), tmp)
    return path


def one_run(variant: str, seed: int, out: str, data: str, epochs: int, backbone: str | None) -> dict:
    core, extra = VARIANTS[variant]
    extra = [backbone if x == STAGE1 else x for x in extra]
    tag = f"{variant}_s{seed}"
    logdir = os.path.join(out, tag)
    for d in (logdir, logdir + "_eval_last", logdir + "_eval_best"):  # our own, from a killed run
        shutil.rmtree(d, ignore_errors=True)
    weights = [x for k, v in WEIGHTS[core].items() for x in (f"--{k}", str(v))]
    t0 = time.perf_counter()
    run(["train.py", "--dataset_path", data, "--pseudo_path", "pseudo_label", *TRAIN, *weights, *extra,
         "--epochs", str(epochs), "--seed", str(seed), "--logdir", logdir])
    t1 = time.perf_counter()
    miou = {}
    for which in ("last", "best"):
        save_dir = f"{logdir}_eval_{which}"
        run(["eval.py", "--checkpoint_path", os.path.join(logdir, f"{which}_checkpoint.pth"),
             "--dataset_path", data, "--save_path", save_dir, *EVAL])
        with open(os.path.join(save_dir, "metrics.json")) as f:
            miou[which] = 100 * json.load(f)["miou"]
    t2 = time.perf_counter()
    return {"variant": variant, "seed": seed, "miou_last": miou["last"], "miou_best": miou["best"],
            "train_s": round(t1 - t0, 1), "eval_s": round(t2 - t1, 1), "wall_s": round(t2 - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/ablation", help="work folder (runs, data)")
    ap.add_argument("--json", default=os.path.join(REPO, "bench", "results", "ablation.json"))
    ap.add_argument("--epochs", type=int, default=15, help="the quickstart's 15")
    ap.add_argument("--seeds", type=int, default=5, help="seeds first_seed .. first_seed + N - 1")
    ap.add_argument("--first_seed", type=int, default=1000)
    ap.add_argument("--variants", nargs="+", default=CORE, choices=list(VARIANTS))
    ap.add_argument("--data_seed", type=int, default=0)
    ap.add_argument("--report", action="store_true", help="only print and plot the JSON's runs")
    ap.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"),
                    help="only compare two sweeps' JSON files, paired by variant and seed")
    a = ap.parse_args()
    if a.compare:
        docs = []
        for path in a.compare:
            with open(path) as f:
                docs.append(json.load(f))
        if docs[0]["meta"].get("recipe") != docs[1]["meta"].get("recipe"):
            sys.exit(f"{a.compare[0]} and {a.compare[1]}: sweeps of different recipes cannot be paired")
        print(compare(*docs))
        return
    png = os.path.splitext(a.json)[0] + ".png"
    doc = {"meta": {}, "runs": []}
    if os.path.isfile(a.json):
        with open(a.json) as f:
            doc = json.load(f)
    if not a.report:
        out = os.path.abspath(a.out)
        data = os.path.join(out, "data")
        run(["-m", "datasets.synthetic", "--out", data, "--seed", str(a.data_seed)])
        from datasets.meta import load_meta
        # the set's classes (its dataset.yaml) are the network's outputs and the metric's rows
        recipe = {"train": TRAIN, "eval": EVAL, "epochs": a.epochs, "data_seed": a.data_seed,
                  "classes": list(load_meta(data).classes)}
        if doc["runs"] and doc["meta"].get("recipe") != recipe:
            sys.exit(f"{a.json}: holds runs of another recipe; move it away to start a new sweep")
        doc["meta"] = {**machine(), "recipe": recipe}
        todo = pending(doc["runs"], a.first_seed, a.seeds, a.variants)
        backbone = None
        if any(STAGE1 in VARIANTS[v][1] for v, _ in todo):
            backbone = stage1_backbone(out, data)
        run_pending(doc, todo, a.json, "ablation runs", lambda v, s: one_run(v, s, out, data, a.epochs, backbone),
                    lambda v, s, r: f"{LABELS[v]:32s} seed {s}: last {r['miou_last']:.2f}  "
                                    f"best {r['miou_best']:.2f}  ({r['wall_s']:.0f} s)")
    if not doc["runs"]:
        sys.exit(f"{a.json}: no runs yet")
    print(report(doc))
    plot(doc, png)
    print(f"\nruns: {a.json}\nplot: {png}")


if __name__ == "__main__":
    main()
