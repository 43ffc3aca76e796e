"""One command for a GPU machine (a few minutes on one H200): CUDA correctness and the figures
that only a GPU can give. Prints a table and writes <out>/gpu.json.

    python bench/gpu.py [--out DIR] [--smoke] [--sections correctness,train,input,eval]

Sections (each runs even if another failed; a failure is recorded in gpu.json with its error,
and the exit code is 1 if any section failed):
- correctness: `python -m pytest -m cuda tests/test_cuda.py` in a subprocess (AMP fp16 +
  GradScaler and bf16 training steps, LoRM's fused attention vs lorm_reference and the SDPA
  backends for its 2048-wide head, train.py under torchrun / NCCL / SyncBatchNorm, batched vs
  one-window inference); pass/fail counts and the tests' recorded facts go into the JSON;
- train: images/s and peak CUDA memory of a training step (utils.engine.train_step of
  train.SegmentationTask, the full CDSP loss) of R50 DeepLabV2, crop 465, batch 16, fp16 AMP
  with GradScaler, the batch already on the GPU: without LoRM, with our LoRM, and with the
  explicit full-matrix formula (build_model(lorm_explicit=True), bench/lorm.py's baseline). Targets:
  LoRM <= 1.15x the step without it; ours >= 1.5x faster than explicit;
- input: images/s of the real training loader (train.build_loaders: ScribbleDataset +
  TrainTransform, pinned memory, persistent workers) on a generated VOC-sized (375x500) set,
  with 8 workers and train.py's default, vs the training step's consumption rate measured in
  `train`: whether the GPU would starve;
- eval: eval.py's model (BN folded, channels-last) and eval.predict, the paper's 7 scales on
  375x500 images: --crop_batch 1 (the authors' one window at a time) vs the default, images/s
  and label agreement, with and without --amp. Target: the default >= 3x crop_batch 1.

Weights are random (BN statistics randomised for eval, as bench/eval.py): speed and agreement
do not depend on them. --smoke runs the same code on CPU at toy sizes (ResNet-18, tiny crops
and images, 1-2 steps, 0-2 workers; the CUDA tests skip) in under a minute: it checks the
script, its figures mean nothing. Without CUDA and without --smoke it exits 1.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import gc
import inspect
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # before bench/: `eval` must be the repo's eval.py

import torch  # noqa: E402

SECTIONS = ("correctness", "train", "input", "eval")
TARGET_LORM_OVERHEAD = 1.15   # LoRM step time / step time without LoRM, at most
TARGET_VS_EXPLICIT = 1.5      # explicit-formula step time / our LoRM step time, at least
TARGET_EVAL_SPEEDUP = 3.0     # crop_batch 1 time / default crop_batch time, at least


@dataclasses.dataclass(frozen=True)
class Config:
    layers: int = 50
    crop: int = 465              # training crop
    batch: int = 16
    warmup_steps: int = 5
    steps: int = 20
    image_size: tuple = (375, 500)   # VOC-sized: the loader's and the evaluation's images
    train_images: int = 32       # generated for the loader section
    loader_batches: int = 4      # per worker and epoch (the id list repeats the images)
    workers: tuple = (8, 4)      # 8, and train.py's default --workers
    eval_images: int = 8
    eval_base_size: int = 512
    eval_crop: int = 465
    pytest_timeout: int = 420


FULL = Config()
SMOKE = Config(layers=18, crop=65, batch=2, warmup_steps=1, steps=1, image_size=(48, 64),
               train_images=4, loader_batches=1, workers=(2, 0), eval_images=1, eval_base_size=64,
               eval_crop=33, pytest_timeout=180)


# ----------------------------------------------------------------------------- helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float:
    """Peak CUDA memory allocated since reset_peak; on CPU the process's peak RSS (monotonic)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def error_entry(e: BaseException) -> dict:
    return {"status": "error", "error": f"{type(e).__name__}: {e}".strip()[:2000],
            "traceback": traceback.format_exc()[-6000:]}


def run_section(name: str, fn, *args) -> dict:
    """fn(*args) -> dict (its "status" defaults to "ok"); an exception becomes an error entry."""
    t0 = time.perf_counter()
    try:
        res = fn(*args)
        res.setdefault("status", "ok")
    except Exception as e:  # noqa: BLE001 - recorded, the other sections still run
        res = error_entry(e)
    res["seconds"] = round(time.perf_counter() - t0, 2)
    print(f"[{name}: {res['status']} in {res['seconds']:.0f} s]", flush=True)
    return res


def environment(device: torch.device, smoke: bool) -> dict:
    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
           "device": str(device), "smoke": smoke, "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), "host": platform.node()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env |= {"gpu": p.name, "gpu_count": torch.cuda.device_count(),
                "gpu_memory_gib": round(p.total_memory / 2**30, 1), "capability": f"{p.major}.{p.minor}",
                "cudnn": torch.backends.cudnn.version(),
                "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                "tf32_cudnn": torch.backends.cudnn.allow_tf32,
                "cudnn_benchmark": torch.backends.cudnn.benchmark}
    return env


# ----------------------------------------------------------------------------- correctness
def _junit_counts(path: str) -> dict:
    root = ET.parse(path).getroot()
    tests = {}
    for case in root.iter("testcase"):
        name = case.get("name")
        outcome, message = "passed", None
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (el.get("message") or el.text or "")[:500]
                break
        tests[name] = {"outcome": outcome, "seconds": round(float(case.get("time") or 0), 2)} | (
            {"message": message} if message else {})
    counts = {k: sum(t["outcome"] == k for t in tests.values()) for k in ("passed", "failed", "error", "skipped")}
    return counts | {"tests": tests}


def correctness(cfg: Config, out: str, device: torch.device) -> dict:
    xml, record, log = (os.path.join(out, n) for n in ("test_cuda.xml", "test_cuda_record.json", "test_cuda.log"))
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "tests/test_cuda.py", "-q", "-rs",
           "-p", "no:cacheprovider", f"--junitxml={xml}"]
    env = {**os.environ, "CDSP_CUDA_RECORD": record}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=cfg.pytest_timeout)
    with open(log, "w") as f:
        f.write(proc.stdout + proc.stderr)
    if not os.path.isfile(xml):
        raise RuntimeError(f"pytest wrote no report (exit {proc.returncode}): {proc.stderr[-1000:]}")
    res = {"command": "python " + " ".join(cmd[1:6]), "exit_code": proc.returncode, "log": log} | _junit_counts(xml)
    res["recorded"] = json.load(open(record)) if os.path.isfile(record) else {}
    if res["failed"] or res["error"] or proc.returncode not in (0, 5):
        res["status"] = "failed"
    return res


# ----------------------------------------------------------------------------- training throughput
def random_batch(device: torch.device, batch: int, crop: int) -> dict:
    """Random inputs for every CDSP loss term, half of the pseudo-label background (as bench/train_step.py)."""
    g = torch.Generator().manual_seed(0)
    pseudo = torch.randint(0, 21, (batch, crop, crop), generator=g)
    pseudo[:, :, : crop // 2] = 0
    b = {"image": torch.randn(batch, 3, crop, crop, generator=g),
         "scribble": torch.randint(0, 21, (batch, crop, crop), generator=g), "pseudo": pseudo,
         "dist_s": torch.rand(batch, crop, crop, generator=g) * 255,
         "dist_c": torch.rand(batch, crop, crop, generator=g) * 255}
    return {k: v.to(device) for k, v in b.items()}


# "held": our LoRM with the previous step's outputs kept alive through the next step, as
# utils.engine.fit did before it released them (the peak it really reached).
TRAIN_VARIANTS = {"plain": "no LoRM", "lorm": "LoRM (ours)", "explicit": "LoRM explicit matrix",
                  "held": "LoRM, outputs held a step"}


def time_train_step(cfg: Config, device: torch.device, variant: str) -> dict:
    from losses import CDSPLoss
    from models import build_model
    from train import SegmentationTask
    from utils.engine import train_step
    from utils.training import autocast_dtype

    amp_dtype = autocast_dtype(device, True)  # fp16 on CUDA (train.py's default there), bf16 on CPU
    torch.manual_seed(0)
    # explicit: the authors' cost, the (B, hw, hw) matrix (models.lorm.lorm_reference)
    model = build_model("deeplabv2", cfg.layers, 21, lorm=variant != "plain", pretrained=None,
                        lorm_explicit=variant == "explicit").to(device).train()
    held = None
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    task = SegmentationTask(model, opt, device, amp_dtype, CDSPLoss(l_lorm=0.0 if variant == "plain" else 1.0))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    batch = random_batch(device, cfg.batch, cfg.crop)
    try:
        for _ in range(cfg.warmup_steps):
            train_step(task, scaler, batch)
        sync(device)
        reset_peak(device)
        t0 = time.perf_counter()
        for _ in range(cfg.steps):
            # ends with a device->host copy of the loss terms; "held" keeps the outputs referenced
            # until the next step has returned
            out = train_step(task, scaler, batch)
            held = out if variant == "held" else None
            del out
        sync(device)
        dt = (time.perf_counter() - t0) / cfg.steps
        return {"s_per_step": dt, "images_per_s": cfg.batch / dt, "peak_mib": peak_mib(device),
                "amp_dtype": str(amp_dtype)}
    finally:
        del model, opt, task, batch, held
        free(device)


def train_throughput(cfg: Config, device: torch.device) -> dict:
    res = {"model": f"R{cfg.layers} DeepLabV2", "crop": cfg.crop, "batch": cfg.batch, "steps": cfg.steps,
           "warmup_steps": cfg.warmup_steps, "variants": {}}
    for v in TRAIN_VARIANTS:
        try:
            res["variants"][v] = time_train_step(cfg, device, v)
        except Exception as e:  # noqa: BLE001 - e.g. out of memory in one variant: keep the others
            res["variants"][v] = error_entry(e)
            free(device)
    var = res["variants"]
    ok = {k for k, v in var.items() if "s_per_step" in v}
    if {"plain", "lorm"} <= ok:
        r = var["lorm"]["s_per_step"] / var["plain"]["s_per_step"]
        res["lorm_vs_plain"] = {"time": r, "memory": var["lorm"]["peak_mib"] / var["plain"]["peak_mib"],
                                "target_time_max": TARGET_LORM_OVERHEAD, "met": r <= TARGET_LORM_OVERHEAD}
    if {"lorm", "explicit"} <= ok:
        r = var["explicit"]["s_per_step"] / var["lorm"]["s_per_step"]
        res["explicit_vs_lorm"] = {"time": r, "memory": var["explicit"]["peak_mib"] / var["lorm"]["peak_mib"],
                                   "target_time_min": TARGET_VS_EXPLICIT, "met": r >= TARGET_VS_EXPLICIT}
    if {"lorm", "held"} <= ok:
        res["released_vs_held"] = {"memory": var["lorm"]["peak_mib"] / var["held"]["peak_mib"],
                                   "saved_mib": var["held"]["peak_mib"] - var["lorm"]["peak_mib"]}
    if len(ok) < len(TRAIN_VARIANTS):
        res["status"] = "error"
        res["error"] = "; ".join(f"{k}: {v['error']}" for k, v in var.items() if k not in ok)
    return res


# ----------------------------------------------------------------------------- input pipeline
def loader_rate(root: str, id_list: str, cfg: Config, workers: int, device: torch.device) -> dict:
    """Images/s of train.py's training loader over its second epoch (persistent workers: the
    first epoch starts them and warms the page cache), each batch's image moved to the device."""
    import train
    from losses import CDSPLoss
    from models import build_model

    args = train.parse_args(["--dataset_path", root, "--pseudo_path", "pseudo_label", "--train_path", id_list,
                             "--crop_size", str(cfg.crop), "--batchsize", str(cfg.batch),
                             "--workers", str(workers), "--no_check"])
    # the fields train.py reads with its defaults (every loss term, LoRM's pseudo-label)
    fields = train.train_fields(CDSPLoss(), build_model("deeplabv2", 18, lorm=True, pretrained=None))
    loader, val_loader = train.build_loaders(args, fields, device)
    try:
        times, n = [], 0
        for epoch in range(2):
            loader.sampler.set_epoch(epoch)
            n = 0
            t0 = time.perf_counter()
            for batch in loader:
                batch["image"].to(device, non_blocking=True)
                n += len(batch["image"])
            sync(device)
            times.append(time.perf_counter() - t0)
        return {"workers": workers, "images_per_s": n / times[-1], "images_per_epoch": n,
                "first_epoch_s": times[0], "second_epoch_s": times[-1]}
    finally:
        del loader, val_loader  # stops the persistent workers
        gc.collect()


def input_pipeline(cfg: Config, device: torch.device, consumer: dict | None) -> dict:
    from datasets.layout import read_ids, split_path
    from datasets.synthetic import generate

    per_epoch = max(cfg.train_images, max(cfg.workers) * cfg.batch * cfg.loader_batches)
    res = {"image_size": list(cfg.image_size), "crop": cfg.crop, "batch": cfg.batch,
           "generated_images": cfg.train_images, "samples_per_epoch": per_epoch, "rates": {}}
    with tempfile.TemporaryDirectory(prefix="cdsp_gpu_bench_") as tmp:
        root = os.path.join(tmp, "VOC")
        t0 = time.perf_counter()
        summary = generate(root, train=cfg.train_images, val=1, size=tuple(cfg.image_size), seed=0, progress=False)
        res["generate_s"] = time.perf_counter() - t0
        id_list = os.path.join(tmp, "train_repeated.txt")
        ids = read_ids(split_path(root, "train"))
        assert len(ids) == summary["params"]["train"]
        with open(id_list, "w") as f:
            f.write("\n".join((ids * math.ceil(per_epoch / len(ids)))[:per_epoch]) + "\n")
        for w in cfg.workers:
            res["rates"][str(w)] = loader_rate(root, id_list, cfg, w, device)
    if consumer:
        need = consumer["images_per_s"]
        res["step_consumes_images_per_s"] = need
        res["step_variant"] = consumer["variant"]
        for r in res["rates"].values():
            r["headroom"] = r["images_per_s"] / need
            r["gpu_would_starve"] = r["images_per_s"] < need
    return res


# ----------------------------------------------------------------------------- evaluation
def evaluation(cfg: Config, device: torch.device) -> dict:
    from types import SimpleNamespace

    from bench.eval import make_model  # random weights, BN statistics randomised
    from datasets.synthetic import sample
    from eval import predict
    from utils.inference import PAPER_SCALES, prepare_for_inference

    default_cb = inspect.signature(predict).parameters["crop_batch"].default
    model = prepare_for_inference(copy.deepcopy(make_model(SimpleNamespace(
        checkpoint=None, model_type="deeplabv2", layers=cfg.layers)))).to(device)
    images = [sample("val", i, size=tuple(cfg.image_size), seed=0)["image"] for i in range(cfg.eval_images)]
    kw = dict(scales=PAPER_SCALES, base_size=cfg.eval_base_size, crop_size=cfg.eval_crop)
    runs = [(amp, cb) for amp in (False, True) for cb in (1, default_cb)]
    for amp, cb in runs:  # warm-up: cuDNN / oneDNN set-up per batch size and precision
        predict(model, images[0], crop_batch=cb, amp=amp, **kw)
    res = {"model": f"R{cfg.layers} DeepLabV2 (eval.py: BN folded, channels-last)",
           "image_size": list(cfg.image_size), "images": len(images), "scales": list(PAPER_SCALES),
           "base_size": cfg.eval_base_size, "crop": cfg.eval_crop, "default_crop_batch": default_cb,
           "amp_dtype": "float16" if device.type == "cuda" else "bfloat16", "runs": {}}
    # Labels must agree wherever the top two probabilities differ by more than float noise: the
    # rounding of full float32 (bench/eval.py's 1e-4), of TF32 convolutions (cuDNN's default), of fp16.
    tf32 = device.type == "cuda" and torch.backends.cudnn.allow_tf32
    margin = {False: 1e-3 if tf32 else 1e-4, True: 1e-2}
    probs = {}
    for amp, cb in runs:
        sync(device)
        t0 = time.perf_counter()
        probs[amp, cb] = [predict(model, im, crop_batch=cb, amp=amp, **kw).float() for im in images]
        sync(device)
        dt = time.perf_counter() - t0
        res["runs"][_run_name(amp, cb)] = {"amp": amp, "crop_batch": cb, "seconds": dt,
                                           "images_per_s": len(images) / dt}
    for amp, cb in runs:
        run = res["runs"][_run_name(amp, cb)]
        base = res["runs"][_run_name(amp, 1)]
        run["speedup_vs_crop_batch_1"] = base["seconds"] / run["seconds"]
        run |= _agreement(probs[amp, cb], probs[amp, 1], margin[amp])
        if amp:
            run["labels_equal_fp32_pct"] = _agreement(probs[amp, cb], probs[False, 1], 0)["labels_equal_pct"]
    for amp in (False, True):
        s = res["runs"][_run_name(amp, default_cb)]["speedup_vs_crop_batch_1"]
        res["speedup_amp" if amp else "speedup_fp32"] = {"value": s, "target_min": TARGET_EVAL_SPEEDUP,
                                                          "met": s >= TARGET_EVAL_SPEEDUP}
    res["identical_labels_fp32"] = res["runs"][_run_name(False, default_cb)]["identical_on_clear_pixels"]
    del model, probs
    free(device)
    return res


def _run_name(amp: bool, cb: int) -> str:
    return f"{'amp' if amp else 'fp32'} crop_batch {cb}"


def _agreement(got: list, ref: list, margin: float) -> dict:
    """% of equal labels, and whether they are equal wherever ref's top-2 gap exceeds `margin`."""
    equal = total = 0
    clear_ok, diff = True, 0.0
    for g, r in zip(got, ref):
        same = g.argmax(0) == r.argmax(0)
        top2 = r.topk(2, dim=0).values
        clear_ok &= bool((same | ((top2[0] - top2[1]) <= margin)).all())
        equal += int(same.sum())
        total += same.numel()
        diff = max(diff, float((g - r).abs().max()))
    return {"labels_equal_pct": 100 * equal / total, "identical_on_clear_pixels": clear_ok,
            "clear_margin": margin, "max_abs_prob_diff": diff}


# ----------------------------------------------------------------------------- the table
def _met(flag: bool) -> str:
    return "met" if flag else "MISSED"


def print_table(report: dict) -> None:
    env, sec = report["environment"], report["sections"]
    smoke = " [CPU SMOKE: toy sizes, figures mean nothing]" if env["smoke"] else ""
    print("=" * 78)
    print(f"CDSP GPU bench on {env.get('gpu', env['device'])}, torch {env['torch']}, CUDA {env['cuda']}{smoke}")
    for name in SECTIONS:
        if name not in sec:
            continue
        s = sec[name]
        print("-" * 78)
        try:
            if s["status"] == "error" and name != "train":
                print(f"{name}: ERROR {s['error'].splitlines()[0]}")
            else:
                globals()[f"_print_{name}"](s)
        except Exception as e:  # noqa: BLE001 - the JSON is written; one bad row must not hide the rest
            print(f"{name}: (could not print: {type(e).__name__}: {e})")


def _print_correctness(s: dict) -> None:
    print(f"correctness: {s['command']}: {s['passed']} passed, {s['failed']} failed, {s['error']} errors, "
          f"{s['skipped']} skipped ({s['seconds']:.0f} s){'  FAILED' if s['status'] != 'ok' else ''}")
    for name, t in s["tests"].items():
        if t["outcome"] in ("failed", "error"):
            print(f"  {t['outcome'].upper()} {name}: {t.get('message', '').splitlines()[0][:150]}")
    rec = s.get("recorded", {})
    if "sdpa_backends_2048_head" in rec:
        print("  SDPA backends for LoRM's 2048-wide head (fp32 / fp16):")
        for b, v in rec["sdpa_backends_2048_head"].items():
            print(f"    {b:<20} {v['fp32'][:40]:<42} {v['fp16'][:40]}")
        print(f"  default dispatch ran: {rec.get('sdpa_default_ran')}")
    if "torchrun_train_note" in rec:
        print(f"  note: {rec['torchrun_train_note']}")


def _print_train(s: dict) -> None:
    tag = "" if s["status"] == "ok" else "  ERROR"
    print(f"training step: {s.get('model')}, crop {s.get('crop')}, batch {s.get('batch')}, AMP, data on "
          f"the device, {s.get('steps')} timed steps{tag}")
    print(f"  {'variant':<24} {'images/s':>9} {'s/step':>8} {'peak MiB':>9}")
    for k, label in TRAIN_VARIANTS.items():
        v = s.get("variants", {}).get(k, {})
        if "s_per_step" in v:
            print(f"  {label:<24} {v['images_per_s']:>9.1f} {v['s_per_step']:>8.3f} {v['peak_mib']:>9.0f}")
        elif v:
            print(f"  {label:<24} ERROR {v['error'].splitlines()[0][:60]}")
    if "lorm_vs_plain" in s:
        r = s["lorm_vs_plain"]
        print(f"  LoRM / no LoRM: {r['time']:.2f}x time, {r['memory']:.2f}x memory "
              f"(target <= {r['target_time_max']}x time: {_met(r['met'])})")
    if "explicit_vs_lorm" in s:
        r = s["explicit_vs_lorm"]
        print(f"  explicit / ours: {r['time']:.2f}x time, {r['memory']:.2f}x memory "
              f"(target >= {r['target_time_min']}x: {_met(r['met'])})")
    if "released_vs_held" in s:
        r = s["released_vs_held"]
        print(f"  outputs released / held a step (utils.engine.fit before): {r['memory']:.2f}x peak memory, "
              f"{r['saved_mib']:.0f} MiB saved")


def _print_input(s: dict) -> None:
    print(f"input pipeline: train.py's loader, {s['image_size'][0]}x{s['image_size'][1]} images, crop "
          f"{s['crop']}, batch {s['batch']}, {s['samples_per_epoch']} samples per epoch")
    for w, r in s["rates"].items():
        verdict = ""
        if "headroom" in r:
            verdict = (f"  vs step {s['step_consumes_images_per_s']:.1f} img/s: "
                       f"{'GPU WOULD STARVE' if r['gpu_would_starve'] else 'GPU fed'} ({r['headroom']:.2f}x)")
        print(f"  {w} workers: {r['images_per_s']:>8.1f} images/s{verdict}")
    if "step_consumes_images_per_s" not in s:
        print("  (no training-step rate to compare with: the train section did not run or failed)")


def _print_eval(s: dict) -> None:
    print(f"evaluation: {s['model']}, {s['images']} images {s['image_size'][0]}x{s['image_size'][1]}, "
          f"{len(s['scales'])} scales, crop {s['crop']}")
    print(f"  {'procedure':<22} {'images/s':>9} {'speed-up':>9} {'labels = cb 1':>14} {'identical':>10}")
    for name, r in s["runs"].items():
        extra = f"  ({r['labels_equal_fp32_pct']:.2f} % = fp32)" if "labels_equal_fp32_pct" in r else ""
        print(f"  {name:<22} {r['images_per_s']:>9.2f} {r['speedup_vs_crop_batch_1']:>8.2f}x "
              f"{r['labels_equal_pct']:>13.3f}% {'yes' if r['identical_on_clear_pixels'] else 'NO':>10}{extra}")
    for k in ("speedup_fp32", "speedup_amp"):
        r = s[k]
        print(f"  {k}: crop_batch {s['default_crop_batch']} vs 1: {r['value']:.2f}x "
              f"(target >= {r['target_min']}x: {_met(r['met'])})")


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="output directory (default bench/results/gpu/<UTC time>)")
    ap.add_argument("--smoke", action="store_true", help="CPU, toy sizes: checks the script in < 1 min")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    args = ap.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {unknown}; choose from {SECTIONS}")
    if not args.smoke and not torch.cuda.is_available():
        print("bench/gpu.py needs a CUDA GPU and found none; use --smoke for a CPU check at toy sizes",
              file=sys.stderr)
        return 1
    cfg, device = (SMOKE, torch.device("cpu")) if args.smoke else (FULL, torch.device("cuda"))
    started = datetime.datetime.now(datetime.timezone.utc)
    out = args.out or os.path.join(REPO, "bench", "results", "gpu",
                                   started.strftime("%Y%m%dT%H%M%SZ") + ("-smoke" if args.smoke else ""))
    os.makedirs(out, exist_ok=True)
    report = {"environment": environment(device, args.smoke), "config": dataclasses.asdict(cfg),
              "started_utc": started.isoformat(timespec="seconds"), "sections": {}}
    t0 = time.perf_counter()
    sec = report["sections"]
    if "correctness" in sections:
        sec["correctness"] = run_section("correctness", correctness, cfg, out, device)
    if "train" in sections:
        sec["train"] = run_section("train", train_throughput, cfg, device)
    if "input" in sections:
        lorm = sec.get("train", {}).get("variants", {}).get("lorm", {})
        consumer = {"images_per_s": lorm["images_per_s"], "variant": "lorm"} if "images_per_s" in lorm else None
        sec["input"] = run_section("input", input_pipeline, cfg, device, consumer)
    if "eval" in sections:
        sec["eval"] = run_section("eval", evaluation, cfg, device)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["failed_sections"] = [k for k, v in sec.items() if v["status"] != "ok"]
    path = os.path.join(out, "gpu.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=1, default=str)
    print_table(report)
    print("-" * 78)
    failed = report["failed_sections"]
    print(f"{report['seconds']:.0f} s; wrote {path}" + (f"; FAILED sections: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
