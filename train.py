"""Train CDSP (SPEC §5-§6): scribbles + pseudo-labels, DEL on both distance maps, LoRM.

    python train.py --dataset_path DIR --pseudo_path NAME [--layers 50 --model_type deeplabv2 ...]
    torchrun --nproc_per_node N train.py ...        # DDP + SyncBatchNorm on CUDA, gloo on CPU

The flag names are the authors' (so their scripts' habits still work); unknown flags are an
error. The lr is used as given, also under torchrun: with N GPUs the global batch is
N x --batchsize, so scale --lr yourself if you want the authors' N x lr (see README).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from datasets.check import require_dataset
from datasets.layout import DatasetError
from datasets.scribble import ScribbleDataset
from datasets.transforms import TrainTransform, ValTransform, denormalize
from losses import CDSPLoss
from models import build_model
from models.lorm import foreground_mask
from utils import dist
from utils.checkpoint import CheckpointError, save_checkpoint
from utils.cli import run_main
from utils.inference import upsample_logits
from utils.io import prepare_output_dir, save_rgb_png
from utils.log import MetricsLog, save_config
from utils.metrics import ConfusionMeter, scores
from utils.palette import colorize
from utils.training import (BEST, LAST, TrainingError, autocast_dtype, check_weights_in_sync, collate,
                            distributed, lr_at, pretrained_error, restore, resume_path, seed_epoch,
                            seed_everything, shuffled_loader, unwrap)


# ----------------------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    a = p.add_argument
    g = "model"
    a("--model_type", default="deeplabv2", choices=["deeplabv2", "deeplabv3p"], help=g)
    a("--layers", type=int, default=50, choices=[18, 34, 50, 101], help="ResNet depth")
    a("--numclasses", type=int, default=21)
    a("--pretrained", default="imagenet",
      help="backbone init: imagenet (torchvision IMAGENET1K_V1), none, or a local state_dict file")
    # data
    a("--dataset_path", default="dataset/ScribbleSup/VOC2012", help="root of the SPEC §1 layout")
    a("--train_path", default="train", help="train id list: a split name or a .txt path")
    a("--val_path", default="val", help="val id list: a split name or a .txt path")
    a("--pseudo_path", default=None, help="pseudo-label folder (name under the root, or a path)")
    a("--distancemap_s", default="distance_map", help="scribble distance-map folder (D_s)")
    a("--distancemap_c", default="distance_pseudo", help="pseudo-label distance-map folder (D_c)")
    a("--scribble_path", default="pascal_2012_scribble", help="scribble folder")
    a("--crop_size", type=int, default=465)
    a("--workers", type=int, default=4)
    # loss (SPEC §5)
    a("--l_seg", type=float, default=1.0, help="weight of the partial CE on scribbles")
    a("--l_pseudo", "--l_pesudo", dest="l_pseudo", type=float, default=1.0,
      help="weight of the pseudo-label CE (--l_pesudo: the authors' spelling)")
    a("--label_smooth", type=float, default=0.1)
    a("--l_ds", type=float, default=1.0, help="weight of DEL on the scribble distance map")
    a("--l_dc", type=float, default=1.0, help="weight of DEL on the pseudo-label distance map")
    a("--l_lorm", type=float, default=1.0, help="weight of the LoRM loss (0: no LoRM module)")
    a("--lorm_temperature", type=float, default=1.0,
      help="divides LoRM's cosine attention logits; 1 (default) is the paper's formula")
    # optimisation (SPEC §6)
    a("--batchsize", type=int, default=16, help="per process")
    a("--lr", type=float, default=1e-3)
    a("--warmup", type=float, default=5, help="linear warm-up length in epochs (per-iteration)")
    a("--wdecay", type=float, default=5e-4)
    a("--momentum", type=float, default=0.9)
    a("--epochs", type=int, default=50)
    a("--seed", type=int, default=1000)
    a("--amp", action=argparse.BooleanOptionalAction, default=None,
      help="mixed precision (default: on with CUDA, fp16 + GradScaler; off on CPU)")
    a("--device", default="auto", help="auto, cuda, cpu (under torchrun: LOCAL_RANK's GPU)")
    # bookkeeping
    a("--logdir", default="log/train", help="checkpoints, metrics.csv, curves.png, TensorBoard")
    a("--resume", default=None, help="a checkpoint path, or 'auto' (the log dir's last checkpoint)")
    a("--resume_override", action="store_true",
      help="resume even if the schedule, model or loss flags differ from the checkpoint's")
    a("--val_interval", type=int, default=1, help="validate every N epochs (and after the last)")
    a("--chk_interval", type=int, default=1, help="write the last checkpoint every N epochs")
    a("--stop_after", type=int, default=None,
      help="leave after this many epochs in this run (e.g. a cluster time limit); "
           "the schedule still spans --epochs, and --resume auto continues")
    a("--no_check", action="store_true", help="skip the start-up dataset check")
    return p


# What a resumed run must share with the run that wrote its checkpoint (utils.training.restore):
# the flags that shape the schedule, the model or the loss, and the number of processes.
RESUME_KEYS = ("model_type", "layers", "numclasses", "crop_size", "train_path", "pseudo_path",
               "distancemap_s", "distancemap_c", "scribble_path", "l_seg", "l_pseudo",
               "label_smooth", "l_ds", "l_dc", "l_lorm", "lorm_temperature", "batchsize", "lr",
               "warmup", "wdecay", "momentum", "epochs", "seed", "world_size")


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)  # unknown flags: argparse names them and exits 2
    if args.pseudo_path is None and (args.l_pseudo or args.l_lorm):
        build_parser().error("--pseudo_path is required when --l_pseudo or --l_lorm is non-zero")
    for name in ("batchsize", "epochs", "crop_size", "val_interval", "chk_interval"):
        if getattr(args, name) < 1:
            build_parser().error(f"--{name} must be >= 1")
    return args


# ----------------------------------------------------------------------------- data
def folders(args) -> dict:
    return {"pseudo": args.pseudo_path, "dist_s": args.distancemap_s,
            "dist_c": args.distancemap_c, "scribble": args.scribble_path}


def build_loaders(args, train_fields, device):
    train_set = ScribbleDataset(args.dataset_path, args.train_path, train_fields, folders(args),
                                TrainTransform(args.crop_size), num_classes=args.numclasses)
    val_set = ScribbleDataset(args.dataset_path, args.val_path, ("image", "mask"), folders(args),
                              ValTransform(args.crop_size), num_classes=args.numclasses)
    train_loader = shuffled_loader(train_set, args.batchsize, args.workers, args.seed, device)
    val_loader = DataLoader(val_set, args.batchsize, sampler=dist.ShardSampler(len(val_set)),
                            num_workers=args.workers, pin_memory=device.type == "cuda", collate_fn=collate)
    return train_loader, val_loader


# ----------------------------------------------------------------------------- model
def build(args, device):
    try:
        model = build_model(args.model_type, args.layers, args.numclasses, lorm=args.l_lorm != 0,
                            pretrained=None if args.pretrained == "none" else args.pretrained,
                            lorm_temperature=args.lorm_temperature)
    except (OSError, ValueError) as e:  # a missing or wrong --pretrained file, no network
        raise pretrained_error(args.pretrained, e) from None
    model = distributed(model.to(device), device)
    # SPEC §6: one parameter group (the authors used a single lr for backbone and head).
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.wdecay)
    return model, optimizer


def forward(model, batch, criterion, device, amp_dtype):
    image = batch["image"].to(device, non_blocking=True)
    targets = {k: batch[k].to(device, non_blocking=True) for k in criterion.required_fields()
               if k != "image"}
    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        if criterion.uses_lorm:
            pseudo = targets["pseudo"]
            out = model(image, fg_mask=foreground_mask(pseudo, pseudo.shape[-2:]))
        else:
            out = model(image)
    # Losses in float32: entropy and log-softmax of fp16 logits lose too much.
    out = {k: v.float() for k, v in out.items()}
    total, terms = criterion(out, targets)
    return out, total, terms


# ----------------------------------------------------------------------------- validation
@torch.inference_mode()
def validate(model, loader, device, num_classes, amp_dtype, progress) -> dict:
    """SPEC §7 training-time validation: single scale, centre crop, mIoU vs the full masks."""
    model.eval()
    meter = ConfusionMeter(num_classes, device=device)
    for batch in tqdm(loader, desc="val", leave=False, disable=not progress):
        image = batch["image"].to(device, non_blocking=True)
        mask = batch["mask"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(image)["out"]
        meter.update(upsample_logits(logits.float(), mask.shape[-2:]).argmax(1), mask)
    meter.all_reduce()  # every image scored once (ShardSampler), counts summed over ranks
    model.train()
    return scores(meter.conf)


def sample_grid(batch, out, n: int = 4) -> np.ndarray:
    """Rows of image | scribble | pseudo-label | prediction (VOC colours), HxWx3 uint8."""
    pred = upsample_logits(out["out"][:n].detach().float(), batch["image"].shape[-2:]).argmax(1).cpu()
    rows = []
    for i in range(min(n, len(pred))):
        cols = [denormalize(batch["image"][i])]
        for k in ("scribble", "pseudo"):
            if k in batch:
                cols.append(colorize(batch[k][i].numpy()))
        cols.append(colorize(pred[i].numpy()))
        rows.append(np.concatenate(cols, axis=1))
    return np.concatenate(rows, axis=0)


# ----------------------------------------------------------------------------- main loop
def train(args) -> dict:
    device = dist.init_distributed(args.device)
    main_proc = dist.is_main()
    amp_dtype = autocast_dtype(device, args.amp)
    seed_everything(args.seed)
    if main_proc:
        prepare_output_dir(args.logdir, "--logdir")
    if args.batchsize < 2 and not (dist.is_dist() and device.type == "cuda"):
        # BatchNorm (the head's image-pooling branch sees one value per channel) cannot train
        # on one sample; SyncBatchNorm over several GPUs can.
        raise TrainingError("--batchsize 1 cannot train BatchNorm on one process: use >= 2")

    criterion = CDSPLoss(args.l_seg, args.l_pseudo, args.l_ds, args.l_dc, args.l_lorm, args.label_smooth)
    train_fields = criterion.required_fields()
    if not args.no_check:
        require_dataset(args.dataset_path, splits=(args.train_path, args.val_path),
                        folders=folders(args), num_classes=args.numclasses, deep=False,
                        fields_by_split={args.train_path: train_fields, args.val_path: ("image", "mask")})
    train_loader, val_loader = build_loaders(args, train_fields, device)
    model, optimizer = build(args, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    iters_per_epoch = len(train_loader)
    total_iters = args.epochs * iters_per_epoch
    warmup_iters = min(total_iters, max(1, round(args.warmup * iters_per_epoch)))
    start_epoch, iteration, best_miou = 0, 0, -1.0

    run_args = vars(args) | {"world_size": dist.world_size()}
    path = resume_path(args.resume, args.logdir)
    if path is not None:
        ckpt = restore(path, model, optimizer, scaler, device,
                       hint="resume with the same --model_type/--layers/--l_lorm as the run that wrote it",
                       now=run_args, keys=RESUME_KEYS, override=args.resume_override)
        start_epoch, iteration = int(ckpt["epoch"]), int(ckpt["iteration"])
        best_miou = float(ckpt.get("best_miou", -1.0))
        if main_proc:
            print(f"resumed from {path}: epoch {start_epoch}, iteration {iteration}, best mIoU {best_miou:.2f}")
    elif args.resume == "auto" and main_proc:
        print(f"--resume auto: no {LAST} in {args.logdir}, starting from scratch")

    log = None
    if main_proc:
        save_config(run_args | {"device": str(device), "amp_dtype": str(amp_dtype),
                                "train_fields": list(train_fields), "iters_per_epoch": iters_per_epoch},
                    args.logdir)
        log = MetricsLog(args.logdir)
        log.truncate(start_epoch)  # a resumed run redoes the epochs after its checkpoint

    def state(epoch_done: int) -> dict:
        return {"state_dict": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(), "epoch": epoch_done, "iteration": iteration,
                "best_miou": best_miou, "args": run_args}

    model.train()
    result = {"best_miou": best_miou, "val_miou": float("nan")}
    for epoch in range(start_epoch, args.epochs):
        seed_epoch(args.seed, epoch)
        train_loader.sampler.set_epoch(epoch)
        sums: dict[str, float] = {}
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{args.epochs}", disable=not main_proc,
                   dynamic_ncols=True)
        t0 = time.time()
        for step, batch in enumerate(bar):
            lr = lr_at(iteration, args.lr, warmup_iters, total_iters)
            for g in optimizer.param_groups:
                g["lr"] = lr
            out, total, terms = forward(model, batch, criterion, device, amp_dtype)
            values = {k: float(v.detach()) for k, v in terms.items()}
            bad = [k for k, v in values.items() if k != "total" and not math.isfinite(v)]
            if bad or not math.isfinite(values["total"]):
                raise TrainingError(f"non-finite loss at epoch {epoch + 1}, step {step + 1} "
                                    f"(iteration {iteration + 1}): term(s) {bad or ['total']} = "
                                    f"{[values[k] for k in (bad or ['total'])]}; the last good "
                                    f"checkpoint is left in place")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.step(optimizer)
            scaler.update()
            iteration += 1
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            if main_proc:
                bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()} | {"lr": f"{lr:.2e}"})
                log.scalars({f"loss/{k}": v for k, v in values.items()} | {"lr": lr}, iteration)
                if step == 0:
                    grid = sample_grid(batch, out)
                    log.image("train/image|scribble|pseudo|prediction", grid, iteration)
                    save_rgb_png(grid, os.path.join(args.logdir, "train_samples.png"))
        row = {"epoch": epoch + 1, "iteration": iteration, "lr": lr, "time_s": round(time.time() - t0, 2)}
        row |= {f"loss_{k}": v / iters_per_epoch for k, v in sums.items()}

        last_epoch = epoch + 1 == args.epochs
        row["val_miou"] = float("nan")
        if (epoch + 1) % args.val_interval == 0 or last_epoch:
            s = validate(model, val_loader, device, args.numclasses, amp_dtype, main_proc)
            row["val_miou"] = 100 * s["miou"]
            result["val_miou"] = row["val_miou"]
            if main_proc:
                log.scalars({"val/mIoU": row["val_miou"], "val/pixel_acc": 100 * s["pixel_acc"]}, iteration)
                print(f"epoch {epoch + 1}: val mIoU {row['val_miou']:.2f} "
                      f"(best {max(best_miou, row['val_miou']):.2f})")
            if row["val_miou"] > best_miou:
                best_miou = row["val_miou"]
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
    result["best_miou"] = best_miou
    if main_proc and log is not None:
        log.close()
        print(f"done: best val mIoU {best_miou:.2f}; checkpoints, metrics.csv, curves.png in {args.logdir}")
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_main(lambda: train(args), (DatasetError, CheckpointError, TrainingError),
                    "the last checkpoint written is intact")


if __name__ == "__main__":
    sys.exit(main())
