"""The pieces of the training loop (utils/engine.py, which train.py and the CAM classifier of
make_pseudo_labels.py share): the lr schedule, seeding, batching, DDP wrapping, resuming."""
from __future__ import annotations

import math
import os
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from utils import dist
from utils.parallel import data_loader

LAST, BEST = "last_checkpoint.pth", "best_checkpoint.pth"


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, empty loader...); the message says where."""


def pretrained_error(value: str, e: Exception) -> TrainingError:
    """The one-line error for a --pretrained that cannot be loaded (a missing or wrong file, or
    the ImageNet download without network), with the flags that get past it."""
    advice = " Use --pretrained FILE for a downloaded file, or --pretrained none for random init." \
        if value == "imagenet" else ""
    return TrainingError(f"--pretrained {value}: {e}.{advice}".replace("..", "."))


def lr_at(iteration: int, base_lr: float, warmup_iters: int, total_iters: int) -> float:
    """SPEC §6, per iteration: linear warm-up to base_lr, then cosine to 0 at total_iters.

    A pure function of the iteration, so a resumed run follows the exact same schedule.
    """
    if iteration < warmup_iters:
        return base_lr * (iteration + 1) / warmup_iters
    t = (iteration - warmup_iters) / max(1, total_iters - warmup_iters)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def schedule_note(saved: dict | None, now: dict, epoch: int, iteration: int, iters_per_epoch: int) -> str | None:
    """What resuming with another --lr / --epochs / --warmup (--resume_override) does to the lr,
    in words, or None when the schedule is unchanged: the schedule is recomputed from the new
    values (lr_at is a function of the iteration), so the lr jumps from where the checkpoint's
    schedule stood to where the new one stands at the same iteration."""
    saved = saved or {}
    keys = ("lr", "epochs", "warmup")
    if not all(k in saved for k in keys) or all(saved[k] == now.get(k) for k in keys):
        return None
    old_ipe = iteration // epoch if epoch else iters_per_epoch
    old = lr_at(iteration, saved["lr"], round(saved["warmup"] * old_ipe), saved["epochs"] * old_ipe)
    total = now["epochs"] * iters_per_epoch
    new = lr_at(iteration, now["lr"], min(total, round(now["warmup"] * iters_per_epoch)), total)
    return (f"lr schedule recomputed for --lr {now['lr']:g} --epochs {now['epochs']} --warmup {now['warmup']:g}: "
            f"at iteration {iteration} the lr goes from {old:.3g} (the checkpoint's schedule) to {new:.3g}, "
            f"then follows warm-up + cosine to 0 at iteration {total}")


def autocast_dtype(device: torch.device, amp: bool | None) -> torch.dtype | None:
    """--amp/--no-amp (None: on with CUDA): fp16 on CUDA (with a GradScaler), bf16 on CPU."""
    if not ((device.type == "cuda") if amp is None else amp):
        return None
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_epoch(seed: int, epoch: int) -> None:
    """Everything random in an epoch is a function of (seed, epoch, rank): exact resume."""
    seed_everything(seed + 1000 * epoch + dist.rank())


def collate(samples: list[dict]) -> dict:
    """Stack tensors; keep ids and original sizes as lists."""
    out = {}
    for k in samples[0]:
        vals = [s[k] for s in samples]
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
    return out


def single(batch: list) -> dict:
    """The collate of a batch of one sample, not stacked: whole images differ in size (eval.py,
    training-time validation)."""
    return batch[0]


def unwrap(model):
    return model.module if hasattr(model, "module") else model


def resume_path(resume: str | None, logdir: str) -> str | None:
    """--resume PATH as given; --resume auto: the log dir's last checkpoint if there is one."""
    if resume is None:
        return None
    if resume == "auto":
        path = os.path.join(logdir, LAST)
        return path if os.path.isfile(path) else None
    return resume


def check_weights_in_sync(model) -> None:
    """Under DDP every rank must end with the same weights (the authors' DDP silently did not)."""
    if not dist.is_dist():
        return
    with torch.no_grad():
        s = torch.stack([p.detach().double().sum() for p in unwrap(model).parameters()])
    gathered = dist.all_gather(s)
    if any(not torch.equal(g, gathered[0]) for g in gathered):
        raise TrainingError("weights differ across ranks after training: gradients were not synchronised")
    if dist.is_main():
        print(f"weights identical on all {dist.world_size()} ranks (checksum {float(s.sum()):.6e})")


class EpochKeys(Sampler):
    """The training sampler's indices as keys `(index, (seed, epoch))`: a dataset given such a
    key augments from datasets.transforms.augmentation_rng(seed, epoch, index) (ScribbleDataset
    does). The draws are then a function of the run, the epoch and the image alone -- the same
    with 0 or N loader workers, persistent or not, on any rank, after any resume -- where
    seeding from a worker's start (torch.initial_seed()) would tie them to the epoch the
    workers happened to start in (persistent workers start once per run, so a resumed run
    would draw differently). The keys are made in the main process when an epoch's iterator
    is created, so set_epoch must come first (utils.engine.fit: set_epoch, then iterate)."""

    def __init__(self, sampler: DistributedSampler, seed: int):
        self.sampler, self.seed, self.epoch = sampler, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        key = (self.seed, self.epoch)
        return iter([(int(i), key) for i in self.sampler])

    def __len__(self) -> int:
        return len(self.sampler)


def shuffled_loader(dataset: Dataset, batch_size: int, workers: int, seed: int, device) -> DataLoader:
    """The training loader: DistributedSampler also in one process (1 replica: one code path,
    seeded per epoch by set_epoch) under EpochKeys, full batches only; persistent workers (no
    process start-up at each epoch), pinned memory for CUDA; TrainingError if there is no batch.

    Its own torch generator (for the workers' base seed) leaves the global RNG alone: with
    persistent workers the base seed is drawn only at the first epoch of a process, which would
    shift the global stream (dropout) in a resumed run but not in the uninterrupted one."""
    sampler = DistributedSampler(dataset, num_replicas=dist.world_size(), rank=dist.rank(),
                                 shuffle=True, seed=seed, drop_last=True)
    loader = data_loader(dataset, batch_size, sampler=EpochKeys(sampler, seed), num_workers=workers,
                         pin_memory=device.type == "cuda", drop_last=True, collate_fn=collate,
                         persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed))
    if len(loader) == 0:
        raise TrainingError(f"{len(dataset)} training ids give no full batch of {batch_size} "
                            f"per process (x{dist.world_size()}): lower --batchsize")
    return loader


def distributed(model: torch.nn.Module, device, sync_bn: bool = True) -> torch.nn.Module:
    """Under torchrun: SyncBatchNorm (CUDA only: it refuses CPU modules; it keeps the same
    Parameter objects, so optimiser groups built before stay valid) and DDP. Else `model`."""
    if not dist.is_dist():
        return model
    if sync_bn and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)


def _comparable(v):
    return list(v) if isinstance(v, tuple) else v  # a checkpoint may hold a tuple as a list


def changed_flags(saved: dict | None, now: dict, keys) -> list[str]:
    """`--flag saved -> now` for each of `keys` whose value differs between the run that wrote a
    checkpoint (its stored args) and this one; keys the checkpoint lacks are not compared."""
    saved = saved or {}
    return [f"--{k} {saved[k]!r} -> {now.get(k)!r}" for k in keys
            if k in saved and _comparable(saved[k]) != _comparable(now.get(k))]


def restore(path: str, model, optimizer, scaler, device, hint: str, now: dict | None = None,
            keys=(), override: bool = False, kind: str | None = None, user: str = "--resume") -> dict:
    """Load a training checkpoint into model / optimizer / scaler; return it (epoch, iteration
    and the loop's own entries are the caller's).

    `keys` are the settings that shape the schedule, the model or the loss: if `now` (this
    run's args) differs from the checkpoint's stored args in any of them, resuming would
    silently splice two different runs, so it is a TrainingError listing them, unless
    `override` (--resume_override), which only warns. A checkpoint of another `kind` (a CAM
    classifier's given to train.py) is a CheckpointError saying so, whatever `override`.
    """
    from utils.checkpoint import load_checkpoint, load_model_weights, require_kind
    ckpt = load_checkpoint(path, map_location=device)
    if kind is not None:
        require_kind(ckpt, path, kind, user)
    diff = changed_flags(ckpt.get("args"), now or {}, keys)
    if diff and not override:
        raise TrainingError(f"{path}: this run's settings differ from the run that wrote the "
                            f"checkpoint: {'; '.join(diff)}. Resume with the checkpoint's values, "
                            f"start a new --logdir, or pass --resume_override to continue with "
                            f"the new ones")
    if diff and dist.is_main():
        print(f"warning: --resume_override: continuing {path} with {'; '.join(diff)}")
    load_model_weights(unwrap(model), ckpt["state_dict"], path, hint=hint)
    optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    return ckpt
