"""CDSP on real scribbles: ACDC (WSL4MIS's expert scribbles), fold 1, at a CPU budget, as a
distribution over paired seeds:

    (a) scribbles only (pCE)                   (b) + pseudo-label CE (random-walker labels)
    (c) + DEL on both distance maps            (d) + LoRM (full CDSP)

    python -m datasets.import_volumes --wsl4mis WSL4MIS/data/ACDC --out DATA --folds 5 --fold 1
    python bench/acdc.py --data DATA                   # the sweep: ~2-2.5 h on 2 quiet CPU cores
    python bench/acdc.py --data DATA --report          # print + draw what the JSON holds
    python bench/acdc.py --smoke --out DIR             # the same code paths on generated h5 files

Data (made once, resumably, under --data): random-walker pseudo-labels of the train and val
slices (datasets.random_walker, WSL4MIS's settings), D_s of the scribbles and D_c of the
pseudo-labels (datasets.distance_map), and the pseudo-labels' own scores (datasets.score_labels:
3-D Dice / HD95 per structure on the train and on the val volumes).

Each run trains ResNet-18 DeepLabV2 from random init with train.py (only the loss weights differ
between variants; LoRM is built only for (d)), then eval.py scores the *last* checkpoint the
field's way: each val slice at its own size (one scale, the training crop as sliding window),
3-D Dice and HD95 per structure on the 40 val volumes (voxel units: WSL4MIS's h5 files carry no
spacing). Variants are compared paired by seed: mean, 95 % Student-t interval, seeds favouring
each side (bench/ablation.py's statistics).

Writes bench/results/acdc.json (every run, the machine and commit) after each run, so a killed
sweep resumes from the runs already there, then bench/results/acdc.png (val slices: image,
scribble, random-walker label, each variant's prediction) and bench/results/acdc.md (tables).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # before bench/: `eval` must be the repo's eval.py, not bench/eval.py
sys.path.insert(1, os.path.join(REPO, "bench"))
# one copy of the statistics and the sweep loop
from ablation import WEIGHTS, machine, paired, pending, run, run_pending, save, summary  # noqa: E402

VARIANTS = ["a", "b", "c", "d"]
LABELS = {"a": "(a) pCE (scribbles only)", "b": "(b) + pseudo CE (random walker)",
          "c": "(c) + DEL(D_s) + DEL(D_c)", "d": "(d) + LoRM (full CDSP)"}
DIFFS = [("b", "a"), ("c", "b"), ("d", "c"), ("d", "b"), ("d", "a")]
PSEUDO, DIST_S, DIST_C = "random_walker", "distance_map", "distance_random_walker"
STRUCTURES = ("RV", "Myo", "LV")

# The CPU recipe: R18 DeepLabV2, random init, crop 129 (about half an ACDC slice), batch 8, 2
# epochs (378 steps of 162 GFLOP). Eval: each slice at its own size in 129 windows (the training
# crop, from the checkpoint) side by side (stride 1: 4 windows a slice instead of 9 at 2/3).
TRAIN = ["--model_type", "deeplabv2", "--layers", "18", "--pretrained", "none", "--batchsize", "8",
         "--lr", "0.01", "--warmup", "0.2", "--crop_size", "129", "--workers", "1"]
EVAL = ["--scales", "1.0", "--stride_rate", "1", "--workers", "1"]
SMOKE_TRAIN = ["--model_type", "deeplabv2", "--layers", "18", "--pretrained", "none", "--batchsize", "2",
               "--lr", "0.01", "--warmup", "0", "--crop_size", "33", "--workers", "0"]
SMOKE_EVAL = ["--scales", "1.0", "--workers", "0"]


# ----------------------------------------------------------------------------- data
def prepare(data: str, workers: int) -> dict:
    """Random-walker labels (train + val), D_s, D_c, and the labels' own scores; each step skips
    what exists (resumable)."""
    from datasets.distance_map import convert_folder
    from datasets.random_walker import label_folder
    from datasets.score_labels import score_labels
    scores = {}
    for split in ("train", "val"):
        _, failed = label_folder(data, PSEUDO, split, workers=workers)
        if failed:
            sys.exit("random walker failed:\n" + "\n".join(failed[:10]))
        s = score_labels(data, PSEUDO, split)
        scores[split] = {"miou": s["miou"], "cases": s["cases"]}
    for kind, src, dst in (("scribble", "pascal_2012_scribble", DIST_S), ("pseudo", PSEUDO, DIST_C)):
        failed = convert_folder(kind, os.path.join(data, src), os.path.join(data, dst), workers=workers)
        if failed:
            sys.exit(f"{kind} maps failed:\n" + "\n".join(failed[:10]))
    return scores


def make_smoke_data(folder: str) -> str:
    """Six tiny h5 volumes in WSL4MIS's layout (three patients, two frames), imported."""
    import h5py
    import numpy as np
    from datasets.import_volumes import WSL4MISSource, import_volumes
    src = os.path.join(folder, "wsl4mis")
    os.makedirs(os.path.join(src, "ACDC_training_volumes"), exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:40, :44]
    for p in (1, 2, 3):
        for f in (1, 12):
            label = np.zeros((3, 40, 44), np.uint8)
            for z in range(3):
                r = np.hypot(yy - 20 - z, xx - 22)
                label[z][r < 14] = 2
                label[z][r < 9] = 3
                label[z][(r < 12) & (xx < 12)] = 1
            image = np.clip(0.2 + 0.25 * label + 0.05 * rng.standard_normal(label.shape), 0, 1).astype(np.float32)
            scribble = np.full(label.shape, 4, np.uint16)
            for c, (y, x) in enumerate(((3, 5), (20, 10), (20, 33), (20, 22))):
                scribble[:, y:y + 2, x - 3:x + 3] = c
            with h5py.File(os.path.join(src, "ACDC_training_volumes", f"patient{p:03d}_frame{f:02d}.h5"), "w") as h:
                h["image"], h["label"], h["scribble"] = image, label, scribble
    data = os.path.join(folder, "data")
    if not os.path.isfile(os.path.join(data, "dataset.yaml")):
        import_volumes(WSL4MISSource(src), data, ("background", *STRUCTURES), folds=3, fold=1,
                       group=r"patient\d+", unlabelled=4, progress=False)
    return data


# ----------------------------------------------------------------------------- one run
def watch_list(data: str, out: str) -> str:
    """The ids of the first val volume: training-time validation only picks the best checkpoint,
    which the sweep does not use (it scores the last), so it is kept to one volume."""
    from datasets.layout import read_ids, split_path
    from datasets.volumes import cases_of
    path = os.path.join(out, "val_one_volume.txt")
    os.makedirs(out, exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(cases_of(data, read_ids(split_path(data, "val")))[0].ids) + "\n")
    return path


def one_run(variant: str, seed: int, out: str, data: str, epochs: int, train: list, evaluate: list) -> dict:
    tag = f"{variant}_s{seed}"
    logdir, save_dir = os.path.join(out, tag), os.path.join(out, tag + "_eval")
    for d in (logdir, save_dir):  # our own, from a killed run
        shutil.rmtree(d, ignore_errors=True)
    with_pseudo = WEIGHTS[variant]["l_pseudo"] or WEIGHTS[variant]["l_lorm"]
    weights = [x for k, v in WEIGHTS[variant].items() for x in (f"--{k}", str(v))]
    t0 = time.perf_counter()
    run(["train.py", "--dataset_path", data, *(["--pseudo_path", PSEUDO] if with_pseudo else []),
         "--distancemap_s", DIST_S, "--distancemap_c", DIST_C, *train, *weights, "--epochs", str(epochs),
         "--val_interval", str(epochs), "--val_path", watch_list(data, out), "--seed", str(seed),
         "--logdir", logdir])
    t1 = time.perf_counter()
    run(["eval.py", "--checkpoint_path", os.path.join(logdir, "last_checkpoint.pth"), "--dataset_path", data,
         "--save_path", save_dir, *evaluate])
    with open(os.path.join(save_dir, "metrics.json")) as f:
        m = json.load(f)
    cases = m["cases"]
    num = lambda v: float("nan") if v is None else v  # noqa: E731 (metrics.json writes an undefined mean as null)
    return {"variant": variant, "seed": seed, "miou": 100 * m["miou"],
            "dice": {s: 100 * num(cases["dice"][s]["mean"]) for s in STRUCTURES},
            "hd95": {s: num(cases["hd95"][s]["mean"]) for s in STRUCTURES},
            "dice_mean": 100 * num(cases["dice"]["mean"]), "hd95_mean": num(cases["hd95"]["mean"]),
            "notes": cases["notes"], "unit": cases["unit"], "cases": cases["cases"],
            "train_s": round(t1 - t0, 1), "eval_s": round(time.perf_counter() - t1, 1)}


# ----------------------------------------------------------------------------- report
def _by(runs: list[dict], key) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for r in runs:
        v = key(r)
        out.setdefault(r["variant"], {})[r["seed"]] = float("nan") if v is None else v
    return out


FIGURES = [("mean Dice (%)", lambda r: r["dice_mean"])] + \
          [(f"Dice {s} (%)", lambda r, s=s: r["dice"][s]) for s in STRUCTURES] + \
          [("mean HD95", lambda r: r["hd95_mean"])] + \
          [(f"HD95 {s}", lambda r, s=s: r["hd95"][s]) for s in STRUCTURES]


def report(doc: dict) -> str:
    """Markdown: the variants (mean ± std over seeds), the paired differences, the pseudo-labels."""
    runs = doc["runs"]
    order = [v for v in VARIANTS if any(r["variant"] == v for r in runs)]
    unit = runs[0]["unit"] if runs else "px"
    lines = [f"ACDC fold 1 val, {runs[0]['cases'] if runs else '?'} volumes, 3-D scores of the last checkpoint; "
             f"mean ± std over seeds (HD95 in {'voxels' if unit == 'px' else unit})", "",
             "| variant | seeds | " + " | ".join(name for name, _ in FIGURES) + " |",
             "|---|---|" + "---|" * len(FIGURES)]
    for v in order:
        cells = []
        for name, key in FIGURES:
            s = summary(list(_by(runs, key)[v].values()))
            cells.append(f"{s['mean']:.2f} ± {s['std']:.2f}" if s["n"] > 1 else f"{s['mean']:.2f}")
        lines.append(f"| {LABELS[v]} | {len(_by(runs, FIGURES[0][1])[v])} | " + " | ".join(cells) + " |")
    rows = []
    for hi, lo in DIFFS:
        cells = []
        for name, key in FIGURES[:1] + FIGURES[4:5]:
            by = _by(runs, key)
            p = paired(by[hi], by[lo]) if hi in by and lo in by else None
            cells.append(f"{p['mean']:+.2f} [{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}] ({p['favour_first']} / "
                         f"{p['favour_second']})" if p else "n/a")
        if any(c != "n/a" for c in cells):
            rows.append(f"| {hi} − {lo} | " + " | ".join(cells) + " |")
    if rows:
        lines += ["", "Paired over seeds: mean difference [95 % t interval] (seeds favouring first / second)", "",
                  "| difference | " + " | ".join(name for name, _ in FIGURES[:1] + FIGURES[4:5]) + " |",
                  "|---|---|---|"] + rows
    else:  # one draw per variant: a difference of two draws is not evidence either way
        lines += ["", "No paired differences: they need two or more seeds run for both variants."]
    pl = doc.get("pseudo_labels")
    if pl:
        lines += ["", "The random-walker pseudo-labels themselves (no network), 3-D on the volumes:", "",
                  "| split | mean Dice (%) | " + " | ".join(f"Dice {s}" for s in STRUCTURES) + " | mean HD95 | "
                  + " | ".join(f"HD95 {s}" for s in STRUCTURES) + " |", "|---|" + "---|" * 8]
        for split, s in pl.items():
            c = s["cases"]
            lines.append(f"| {split} ({c['cases']} volumes) | {100 * c['dice']['mean']:.2f} | "
                         + " | ".join(f"{100 * c['dice'][x]['mean']:.2f}" for x in STRUCTURES)
                         + f" | {c['hd95']['mean']:.2f} | " + " | ".join(f"{c['hd95'][x]['mean']:.2f}" for x in STRUCTURES)
                         + " |")
    missed = {v: sum(n["missed"] + n["spurious"] for r in runs if r["variant"] == v for n in r["notes"].values())
              for v in order}
    lines += ["", "(structure, volume) pairs missed or spurious (HD95 undefined there, left out of its mean), "
              "summed over the seeds: " + ", ".join(f"({v}) {missed[v]}" for v in order)]
    meta = doc.get("meta", {})
    lines += ["", f"commit {meta.get('git_commit', '?')[:10]}, torch {meta.get('torch', '?')}, {meta.get('cpu', '?')}; "
              f"recipe: {' '.join(meta.get('recipe', {}).get('train', []))}, "
              f"{meta.get('recipe', {}).get('epochs', '?')} epochs; eval {' '.join(meta.get('recipe', {}).get('eval', []))}"]
    return "\n".join(lines) + "\n"


def picture(doc: dict, out: str, data: str, path: str, n: int = 4) -> None:
    """Rows of val slices: image | scribble | random-walker label | each variant's prediction
    (first seed), in the dataset's colours."""
    import numpy as np
    from datasets.layout import Layout, read_ids, split_path
    from datasets.volumes import cases_of
    from utils.io import read_image, read_label
    layout = Layout(data)
    meta = layout.meta
    cases = cases_of(data, read_ids(split_path(data, "val")), meta)
    step = max(1, len(cases) // n)
    ids = [c.ids[len(c.ids) // 2] for c in cases[::step][:n]]  # a mid-ventricular slice of spread cases
    seeds = {r["variant"]: r["seed"] for r in sorted(doc["runs"], key=lambda r: -r["seed"])}
    order = [v for v in VARIANTS if v in seeds]
    rows = []
    for i in ids:
        cols = [read_image(layout.path("image", i)), meta.colorize(read_label(layout.path("scribble", i))),
                meta.colorize(read_label(os.path.join(data, PSEUDO, i + ".png")))]
        cols += [meta.colorize(read_label(os.path.join(out, f"{v}_s{seeds[v]}_eval", i + ".png"))) for v in order]
        h = max(c.shape[0] for c in cols)
        cols = [np.pad(c, ((0, h - c.shape[0]), (0, 2), (0, 0)), constant_values=255) for c in cols]
        rows.append(np.concatenate(cols, axis=1))
    width = max(r.shape[1] for r in rows)
    grid = np.concatenate([np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows])
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(1.6 * (3 + len(order)), 1.5 * len(ids) + 0.6))
    ax.imshow(grid)
    ax.set_axis_off()
    titles = ["image", "scribble", "random walker"] + [LABELS[v].split(" ", 1)[1] for v in order]
    ax.set_title("ACDC fold-1 val slices:  " + "  |  ".join(titles), fontsize=7)
    fig.tight_layout()
    from utils.io import atomic_path
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="the imported ACDC dataset (python -m datasets.import_volumes ...)")
    ap.add_argument("--out", default="runs/acdc", help="work folder (checkpoints, predictions)")
    ap.add_argument("--json", default=os.path.join(REPO, "bench", "results", "acdc.json"))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train_path", default="train", help="train ids (a split name or .txt; a subset for a toy run)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds first_seed .. first_seed + N - 1")
    ap.add_argument("--first_seed", type=int, default=1000)
    ap.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    ap.add_argument("--workers", type=int, default=2, help="processes for the random walker and the maps")
    ap.add_argument("--report", action="store_true", help="only print and draw the JSON's runs")
    ap.add_argument("--smoke", action="store_true", help="generated h5 files, toy sizes, 1 epoch (tests)")
    a = ap.parse_args(argv)
    out = os.path.abspath(a.out)
    train, evaluate, epochs = TRAIN, EVAL, a.epochs
    if a.smoke:
        a.data, train, evaluate, epochs = make_smoke_data(out), SMOKE_TRAIN, SMOKE_EVAL, 1
    if not a.data:
        ap.error("--data is required (the imported dataset), or --smoke")
    stem = os.path.splitext(a.json)[0]
    doc = {"meta": {}, "runs": []}
    if os.path.isfile(a.json):
        with open(a.json) as f:
            doc = json.load(f)
    if not a.report:
        train = [*train, "--train_path", a.train_path]
        recipe = {"train": train, "eval": evaluate, "epochs": epochs, "data": os.path.abspath(a.data)}
        if doc["runs"] and doc["meta"].get("recipe") != recipe:
            sys.exit(f"{a.json}: holds runs of another recipe; move it away to start a new sweep")
        doc["meta"] = {**machine(), "recipe": recipe}
        if "pseudo_labels" not in doc:
            doc["pseudo_labels"] = prepare(a.data, a.workers)
            save(doc, a.json)
        todo = pending(doc["runs"], a.first_seed, a.seeds, a.variants)
        run_pending(doc, todo, a.json, "acdc runs", lambda v, s: one_run(v, s, out, a.data, epochs, train, evaluate),
                    lambda v, s, r: f"{LABELS[v]:34s} seed {s}: mean Dice {r['dice_mean']:.2f}  "
                                    f"mean HD95 {r['hd95_mean']:.2f}  (train {r['train_s']:.0f} s, "
                                    f"eval {r['eval_s']:.0f} s)")
    if not doc["runs"]:
        sys.exit(f"{a.json}: no runs yet")
    text = report(doc)
    print(text)
    from utils.io import atomic_path
    with atomic_path(stem + ".md") as tmp, open(tmp, "w") as f:
        f.write(text)
    if a.data and os.path.isdir(a.data):
        picture(doc, out, a.data, stem + ".png")
    print(f"runs: {a.json}\ntables: {stem}.md\npicture: {stem}.png")


if __name__ == "__main__":
    main()
