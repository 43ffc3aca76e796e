"""The one training loop of this repo: train.py (the segmentation network) and
`make_pseudo_labels.py train` (the CAM classifier) each describe their run as a `Task`, and
`fit` does everything else, the same way for both:

    resume (refusing changed recipes), the per-iteration lr (warm-up + cosine, per parameter
    group's `lr_scale`), the loss step with its non-finite check and GradScaler, the progress
    bar, TensorBoard scalars and the step-0 picture, the epoch row of metrics.csv / curves.png,
    validation every --val_interval epochs, the best and last checkpoints, the barrier that
    keeps ranks in step, --stop_after, and the final DDP weight check.

A Task supplies only what differs: the (wrapped) model and its optimiser, `loss(batch)`,
`validate()`, `picture(batch, outputs)`, and a few names.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import time
from collections.abc import Iterable

import numpy as np
import torch
from tqdm import tqdm

from utils import dist
from utils.checkpoint import CheckpointError, checkpoint_kind, load_checkpoint, save_checkpoint
from utils.device import DEVICE_HELP, device_flag
from utils.io import OutputError, save_rgb_png
from utils.log import MetricsLog, save_config
from utils.outputs import OutputDir, RunLock, claim_output_dir
from utils.training import (BEST, LAST, TrainingError, autocast_dtype, check_weights_in_sync, lr_at,
                            restore, resume_path, schedule_note, seed_epoch, seed_everything, unwrap)


def add_engine_flags(p: argparse.ArgumentParser, logdir: str, epochs: int, warmup: float,
                     seed: int) -> None:
    """The flags `fit` reads besides --lr, shared by both training CLIs (defaults per script)."""
    a = p.add_argument
    a("--epochs", type=int, default=epochs)
    a("--warmup", type=float, default=warmup, help="linear warm-up length in epochs (per-iteration)")
    a("--seed", type=int, default=seed)
    a("--amp", action=argparse.BooleanOptionalAction, default=None,
      help="mixed precision (default: on with CUDA, fp16 + GradScaler; off on CPU)")
    a("--device", default="auto", type=device_flag, help=DEVICE_HELP)
    a("--logdir", default=logdir, help="checkpoints, metrics.csv, curves.png, TensorBoard")
    a("--resume", default=None, help="a checkpoint path, or 'auto' (the log dir's last checkpoint)")
    a("--resume_override", action="store_true",
      help="resume even if the schedule, model or loss flags differ from the checkpoint's")
    a("--start_over", action="store_true",
      help="--logdir holds a run: delete its checkpoints, metrics.csv, curves and TensorBoard "
           "events and train anew there (without it, or --resume, such a folder is refused)")
    a("--val_interval", type=int, default=1, help="validate every N epochs (and after the last)")
    a("--chk_interval", type=int, default=1, help="write the last checkpoint every N epochs")
    a("--stop_after", type=int, default=None,
      help="leave after this many epochs in this run (e.g. a cluster time limit); "
           "the schedule still spans --epochs, and --resume auto continues")


def check_engine_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("epochs", "val_interval", "chk_interval"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    if args.start_over and args.resume is not None:
        p.error("--start_over and --resume contradict each other: give one")


# What a run folder holds (a Task adds its picture); a folder holding one of RUN_RECORDS holds
# a run, which a new run must not silently replace (--resume continues it, --start_over
# deletes it). TensorBoard writes its events under tb/.
RUN_FILES = ("config.json", "metrics.csv", "curves.png", LAST, BEST, "tb")
RUN_RECORDS = (LAST, BEST, "metrics.csv")
TB_EVENTS = "events.out.tfevents."
_RUN: dict = {}  # this process's run folder while it trains (rank 0): "out" OutputDir, "lock" RunLock


def run_names(task_cls: type[Task]) -> list[str]:
    return [*RUN_FILES, task_cls.picture_file]


def start_run(args, task_cls: type[Task],
              inputs: Iterable[str] = ()) -> tuple[torch.device, torch.dtype | None]:
    """Process group, device, autocast dtype, seeds; then, on rank 0, the log dir: claimed as
    `task_cls.tool`'s (utils.outputs: never an input folder in `inputs`, never a folder or file
    someone else wrote), locked for the run's life (a second run is refused naming this one;
    end_run releases it), refused if it holds a run and neither --resume nor --start_over was
    given -- all before data and model are built."""
    device = dist.init_distributed(args.device)
    seed_everything(args.seed)
    if dist.is_main():
        open_run_folder(args, task_cls, inputs)
    return device, autocast_dtype(device, args.amp)


def open_run_folder(args, task_cls: type[Task], inputs: Iterable[str] = ()) -> OutputDir:
    """--logdir claimed with the run's names and locked (start_run); a folder it made is removed
    again if the run is refused."""
    names = run_names(task_cls)
    new = not os.path.exists(args.logdir)
    out = claim_output_dir(args.logdir, task_cls.tool, "--logdir", inputs,
                           earlier=functools.partial(_earlier_run, task_cls=task_cls))
    lock = RunLock(args.logdir, task_cls.tool).acquire()
    try:
        out.claim(names)  # a file someone else put there under one of our names: refused, named
        held = [n for n in RUN_RECORDS if os.path.isfile(out.path(n))]
        if held and args.resume is None and not args.start_over:
            raise OutputError(f"--logdir {args.logdir}: holds a run ({', '.join(held)}); continue it with "
                              f"--resume auto, replace it with --start_over, or choose another --logdir")
        if args.start_over:
            gone = [n for n in names if out.remove(n)]
            tb = out.path("tb")
            if os.path.isdir(tb):
                for e in sorted(os.listdir(tb)):
                    if e.startswith(TB_EVENTS) and out.remove(f"tb/{e}"):
                        gone.append(f"tb/{e}")
            if gone:
                print(f"--start_over: removed the previous run's {', '.join(gone)} from {args.logdir}")
    except BaseException:
        lock.release()
        if new:
            out.discard_if_unused()
        raise
    _RUN.update(out=out, lock=lock, new=new)
    return out


def end_run() -> None:
    """Release the run folder's lock (the training CLIs call it however the run ended; a
    process killed outright leaves a lock that the next run recognises as dead). A folder this
    run created and never wrote into (it failed at the data check) is removed."""
    lock, out, new = _RUN.pop("lock", None), _RUN.pop("out", None), _RUN.pop("new", False)
    if lock is not None:
        lock.release()
    if new and out is not None:
        out.discard_if_unused()


def _earlier_run(path: str, entries: list[str], task_cls: type[Task]) -> bool:
    """An unmarked log folder written by this tool before folders were marked: nothing but the
    run's own names, and a checkpoint of this tool's kind that stores its run's arguments."""
    if not set(entries) <= set(run_names(task_cls)):
        return False
    for name in (LAST, BEST):
        if name in entries:
            try:
                ckpt = load_checkpoint(os.path.join(path, name))
            except CheckpointError:
                return False
            return checkpoint_kind(ckpt) == task_cls.kind and isinstance(ckpt.get("args"), dict) \
                and "logdir" in ckpt["args"]
    return False


class Task:
    """What one training script supplies to `fit`. Subclasses set the names and implement
    `loss` (and `validate`, `picture` where they have them)."""

    val_key = "val"                  # metrics.csv column of the validation metric (in %)
    val_name = "score"               # how it is printed ("val mIoU 61.20")
    desc = "epoch"                   # progress-bar label
    picture_file = "train_samples.png"
    picture_tag = "train/samples"
    tool = "train.py"                # whose --logdir it is (utils.outputs' mark, the run lock)
    kind = "segmentation"            # the checkpoints' kind (utils.checkpoint.KINDS)
    resume_keys: tuple[str, ...] = ()  # flags a resumed run must share (utils.training.restore)
    resume_hint = ""                 # what to try when the checkpoint's keys do not fit the model
    checkpoint_extra: dict = {}      # stored in every checkpoint (e.g. its kind)

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                 amp_dtype: torch.dtype | None):
        self.model, self.optimizer, self.device, self.amp_dtype = model, optimizer, device, amp_dtype

    @property
    def best_key(self) -> str:  # "best_miou", "best_f1": the checkpoint entry of the best value
        return "best_" + self.val_key.removeprefix("val_")

    def autocast(self):
        """The forward pass's precision; losses are computed outside it, in float32."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
        """(total, {term: value, ...}, the model's outputs) of one batch, in training mode."""
        raise NotImplementedError

    def validate(self) -> tuple[float, dict[str, float]] | None:
        """(the validation metric in %, TensorBoard scalars) over the whole split (all ranks
        take part), or None when this run has no validation."""
        return None

    def picture(self, batch: dict, outputs: dict) -> np.ndarray | None:
        """An (H, W, 3) uint8 picture of the batch, drawn at each epoch's first step."""
        return None


def train_step(task: Task, scaler: torch.amp.GradScaler, batch: dict, where=lambda: "") -> tuple[dict, dict]:
    """One optimiser step on `batch`: ({term: value}, the model's outputs). A non-finite loss
    is a TrainingError naming `where()` and the term, raised before the weights change."""
    total, terms, outputs = task.loss(batch)
    # One device->host copy per step for all terms and the total (a float() each would wait for
    # the device once per term).
    *logged, total_value = torch.stack([v.detach().float() for v in [*terms.values(), total]]).tolist()
    values = dict(zip(terms, logged))
    bad = [k for k, v in values.items() if k != "total" and not math.isfinite(v)]
    if bad or not math.isfinite(total_value):
        shown = {"total": total_value} | values
        bad = bad or ["total"]
        raise TrainingError(f"non-finite loss at {where()}: term(s) {bad} = {[shown[k] for k in bad]}; "
                            f"the last good checkpoint is left in place")
    task.optimizer.zero_grad(set_to_none=True)
    scaler.scale(total).backward()
    scaler.step(task.optimizer)
    scaler.update()
    return values, outputs


def fit(task: Task, loader, args, run_args: dict, config_extra: dict | None = None) -> dict:
    """Train `task` over `loader` for args.epochs (see the module docstring); returns
    {val_key: the last validation value, best_key: the best} (NaN / -1 without validation)."""
    model, optimizer, device = task.model, task.optimizer, task.device
    main_proc = dist.is_main()
    scaler = torch.amp.GradScaler(device.type, enabled=task.amp_dtype == torch.float16)
    iters_per_epoch = len(loader)
    total_iters = args.epochs * iters_per_epoch
    warmup_iters = min(total_iters, round(args.warmup * iters_per_epoch))
    start_epoch, iteration, best = 0, 0, -1.0

    path = resume_path(args.resume, args.logdir)
    if path is not None:
        ckpt = restore(path, model, optimizer, scaler, device, hint=task.resume_hint, now=run_args,
                       keys=task.resume_keys, override=args.resume_override, kind=task.kind,
                       user=f"{task.tool} --resume")
        start_epoch, iteration = int(ckpt["epoch"]), int(ckpt["iteration"])
        best = float(ckpt.get(task.best_key, -1.0))
        if main_proc:
            print(f"resumed from {path}: epoch {start_epoch}, iteration {iteration}, "
                  f"best {task.val_name} {best:.2f}")
            note = schedule_note(ckpt.get("args"), run_args, start_epoch, iteration, iters_per_epoch)
            if note:  # --resume_override with another schedule: say what the lr does
                print(note)
    elif args.resume == "auto" and main_proc:
        print(f"--resume auto: no {LAST} in {args.logdir}, starting from scratch")

    log = None
    if main_proc:
        save_config(run_args | (config_extra or {}) | {"device": str(device), "amp_dtype": str(task.amp_dtype),
                                                       "iters_per_epoch": iters_per_epoch}, args.logdir)
        log = MetricsLog(args.logdir, val_key=task.val_key, val_title=f"val {task.val_name} (%)")
        log.truncate(start_epoch)  # a resumed run redoes the epochs after its checkpoint

    def state(epoch_done: int) -> dict:
        return {"state_dict": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(), "epoch": epoch_done, "iteration": iteration,
                task.best_key: best, "args": run_args, **task.checkpoint_extra}

    model.train()
    result = {task.val_key: float("nan"), task.best_key: best}
    for epoch in range(start_epoch, args.epochs):
        seed_epoch(args.seed, epoch)
        loader.sampler.set_epoch(epoch)  # before the epoch's iterator: it takes the sampler's order
        sums: dict[str, float] = {}
        bar = tqdm(loader, desc=f"{task.desc} {epoch + 1}/{args.epochs}", disable=not main_proc,
                   dynamic_ncols=True)
        t0 = time.time()
        for step, batch in enumerate(bar):
            lr = lr_at(iteration, args.lr, warmup_iters, total_iters)
            for g in optimizer.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
            where = lambda: f"epoch {epoch + 1}, step {step + 1} (iteration {iteration + 1})"  # noqa: E731
            values, outputs = train_step(task, scaler, batch, where)
            grid = task.picture(batch, outputs) if main_proc and step == 0 else None
            # The step's outputs (fp32 layer4 and LoRM's x': ~0.9 GB at batch 16, crop 465, R50)
            # must not stay referenced through the next step's forward.
            del outputs
            iteration += 1
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            if main_proc:
                bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()} | {"lr": f"{lr:.2e}"})
                log.scalars({f"loss/{k}": v for k, v in values.items()} | {"lr": lr}, iteration)
                if grid is not None:
                    log.image(task.picture_tag, grid, iteration)
                    save_rgb_png(grid, os.path.join(args.logdir, task.picture_file))
        row = {"epoch": epoch + 1, "iteration": iteration, "lr": lr, "time_s": round(time.time() - t0, 2)}
        row |= {f"loss_{k}": v / iters_per_epoch for k, v in sums.items()}

        last_epoch = epoch + 1 == args.epochs
        row[task.val_key] = float("nan")
        scored = task.validate() if (epoch + 1) % args.val_interval == 0 or last_epoch else None
        if scored is not None:
            value, scalars = scored
            row[task.val_key] = result[task.val_key] = value
            if main_proc:
                log.scalars(scalars, iteration)
                print(f"epoch {epoch + 1}: val {task.val_name} {value:.2f} (best {max(best, value):.2f})")
            if value > best:
                best = value
                if main_proc:
                    save_checkpoint(state(epoch + 1), os.path.join(args.logdir, BEST))
        if main_proc:
            if (epoch + 1) % args.chk_interval == 0 or last_epoch:
                save_checkpoint(state(epoch + 1), os.path.join(args.logdir, LAST))
            log.epoch_row(row)
        dist.barrier()
        if args.stop_after is not None and epoch + 1 - start_epoch >= args.stop_after and not last_epoch:
            if main_proc:
                print(f"stopping after epoch {epoch + 1} (--stop_after {args.stop_after}); "
                      f"continue with --resume auto")
            break
    check_weights_in_sync(model)
    result[task.best_key] = best
    if main_proc and log is not None:
        log.close()
        print(f"done: best val {task.val_name} {best:.2f}; checkpoints, metrics.csv, curves.png, "
              f"{task.picture_file} in {args.logdir}")
    return result
