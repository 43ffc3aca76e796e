"""Train CDSP (SPEC §5-§6): scribbles + pseudo-labels, DEL on both distance maps, LoRM.

    python train.py --dataset_path DIR --pseudo_path NAME [--layers 50 --model_type deeplabv2 ...]
    torchrun --nproc_per_node N train.py ...        # DDP + SyncBatchNorm on CUDA, gloo on CPU

The flag names are the authors' (so their scripts' habits still work); unknown flags are an
error. The lr is used as given, also under torchrun: with N GPUs the global batch is
N x --batchsize, so scale --lr yourself if you want the authors' N x lr (see README).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from tqdm import tqdm

from datasets.check import require_dataset
from datasets.layout import FIELDS, DatasetError, Layout
from datasets.meta import IMAGENET_MEAN, IMAGENET_STD, load_meta, resolve_num_classes
from datasets.scribble import ScribbleDataset
from datasets.transforms import TrainTransform, ValTransform, denormalize
from losses import CDSPLoss
from models import build_model
from utils import dist
from utils.checkpoint import CheckpointError
from utils.cli import run_main
from utils.engine import Task, add_engine_flags, check_engine_flags, end_run, fit, start_run
from utils.inference import multi_scale_predict, upsample_logits
from utils.metrics import ConfusionMeter, scores
from utils.palette import colorize
from utils.parallel import data_loader
from utils.training import TrainingError, distributed, pretrained_error, shuffled_loader, single, unwrap


# ----------------------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    a = p.add_argument
    g = "model"
    a("--model_type", default="deeplabv2", choices=["deeplabv2", "deeplabv3p"], help=g)
    a("--layers", type=int, default=50, choices=[18, 34, 50, 101], help="ResNet depth")
    a("--numclasses", type=int, default=None,
      help="classes incl. background (default: those of <dataset_path>/dataset.yaml, else VOC's 21)")
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
    a("--wdecay", type=float, default=5e-4)
    a("--momentum", type=float, default=0.9)
    add_engine_flags(p, logdir="log/train", epochs=50, warmup=5, seed=1000)
    a("--no_check", action="store_true", help="skip the start-up dataset check")
    return p


# What a resumed run must share with the run that wrote its checkpoint (utils.training.restore):
# the flags that shape the schedule, the model or the loss, and the number of processes.
RESUME_KEYS = ("model_type", "layers", "numclasses", "crop_size", "train_path", "pseudo_path",
               "distancemap_s", "distancemap_c", "scribble_path", "l_seg", "l_pseudo",
               "label_smooth", "l_ds", "l_dc", "l_lorm", "lorm_temperature", "batchsize", "lr",
               "warmup", "wdecay", "momentum", "epochs", "seed", "world_size")


def parse_args(argv=None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)  # unknown flags: argparse names them and exits 2
    if args.pseudo_path is None and (args.l_pseudo or args.l_lorm):
        p.error("--pseudo_path is required when --l_pseudo or --l_lorm is non-zero")
    for name in ("batchsize", "crop_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    check_engine_flags(p, args)
    return args


# ----------------------------------------------------------------------------- data
def folders(args) -> dict:
    return {"pseudo": args.pseudo_path, "dist_s": args.distancemap_s,
            "dist_c": args.distancemap_c, "scribble": args.scribble_path}


def build_loaders(args, train_fields, device, meta=None):
    """Training crops (SPEC §6) and whole validation images (one per step: sizes differ), both
    normalised with the dataset's mean / std (dataset.yaml; ImageNet's by default)."""
    meta = meta or load_meta(args.dataset_path)
    train_set = ScribbleDataset(args.dataset_path, args.train_path, train_fields, folders(args),
                                TrainTransform(args.crop_size, mean=meta.mean, std=meta.std),
                                num_classes=args.numclasses)
    val_set = ScribbleDataset(args.dataset_path, args.val_path, ("image", "mask"), folders(args),
                              ValTransform(None, meta.mean, meta.std), num_classes=args.numclasses)
    train_loader = shuffled_loader(train_set, args.batchsize, args.workers, args.seed, device)
    # Persistent workers here too: validation runs every --val_interval epochs (default 1).
    val_loader = data_loader(val_set, 1, sampler=dist.ShardSampler(len(val_set)),
                             num_workers=args.workers, pin_memory=device.type == "cuda", collate_fn=single,
                             persistent_workers=args.workers > 0)
    return train_loader, val_loader


# ----------------------------------------------------------------------------- model
def new_model(args):
    """The network of the flags, randomly initialised (the backbone weights come later, after
    the data check: a bad dataset should not wait for a download)."""
    return build_model(args.model_type, args.layers, args.numclasses, lorm=args.l_lorm != 0,
                       pretrained=None, lorm_temperature=args.lorm_temperature)


def ready(model, args, device):
    """--pretrained backbone loaded, moved, wrapped for DDP; with its optimiser."""
    try:
        model.load_backbone(None if args.pretrained == "none" else args.pretrained)
    except (OSError, ValueError) as e:  # a missing or wrong --pretrained file, no network
        raise pretrained_error(args.pretrained, e) from None
    model = distributed(model.to(device), device)
    # SPEC §6: one parameter group (the authors used a single lr for backbone and head).
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.wdecay)
    return model, optimizer


def build(args, device):
    return ready(new_model(args), args, device)


def train_fields(criterion: CDSPLoss, model) -> tuple[str, ...]:
    """What the training set must return: the loss terms' fields and the model's own inputs."""
    need = set(criterion.required_fields()) | set(unwrap(model).training_inputs)
    return tuple(f for f in FIELDS if f in need)


# ----------------------------------------------------------------------------- validation
@torch.inference_mode()
def validate(model, loader, device, num_classes, amp_dtype, progress, crop_size: int = 465) -> dict:
    """Training-time validation, scored as eval.py scores: each whole image at its own size (one
    scale), a crop_size sliding window (stride 2/3), mIoU vs the full masks. (The authors scored
    a centre crop, which on small or off-centre structures says little about the whole image.)"""
    model.eval()
    meter = ConfusionMeter(num_classes, device=device)
    for sample in tqdm(loader, desc="val", leave=False, disable=not progress):
        image = sample["image"][None].to(device, non_blocking=True)
        mask = sample["mask"].to(device, non_blocking=True)
        probs = multi_scale_predict(model, image, scales=(1.0,), base_size=max(image.shape[-2:]),
                                    crop=crop_size, amp=amp_dtype is not None)
        meter.update(probs[0].argmax(0), mask)
    meter.all_reduce()  # every image scored once (ShardSampler), counts summed over ranks
    model.train()
    return scores(meter.conf)


def sample_grid(batch, out, n: int = 4, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """Rows of image | scribble | pseudo-label | prediction (VOC colours), HxWx3 uint8."""
    pred = upsample_logits(out["out"][:n].detach().float(), batch["image"].shape[-2:]).argmax(1).cpu()
    rows = []
    for i in range(min(n, len(pred))):
        cols = [denormalize(batch["image"][i], mean, std)]
        for k in ("scribble", "pseudo"):
            if k in batch:
                cols.append(colorize(batch[k][i].numpy()))
        cols.append(colorize(pred[i].numpy()))
        rows.append(np.concatenate(cols, axis=1))
    return np.concatenate(rows, axis=0)


class SegmentationTask(Task):
    """CDSP's training (SPEC §5-§6) for utils.engine.fit: the CDSP loss on the model's outputs."""

    val_key, val_name = "val_miou", "mIoU"
    picture_file, picture_tag = "train_samples.png", "train/image|scribble|pseudo|prediction"
    tool, kind = "train.py", "segmentation"
    resume_keys = RESUME_KEYS
    resume_hint = "resume with the same --model_type/--layers/--l_lorm as the run that wrote it"

    def __init__(self, model, optimizer, device, amp_dtype, criterion: CDSPLoss, val_loader=None,
                 num_classes: int = 21, crop_size: int = 465, meta=None):
        super().__init__(model, optimizer, device, amp_dtype)
        self.criterion, self.val_loader, self.num_classes = criterion, val_loader, num_classes
        self.crop_size = crop_size
        self.norm = (meta.mean, meta.std) if meta is not None else (IMAGENET_MEAN, IMAGENET_STD)
        self.targets = tuple(f for f in criterion.required_fields() if f != "image")
        self.inputs = unwrap(model).training_inputs

    def loss(self, batch):
        move = lambda k: batch[k].to(self.device, non_blocking=True)  # noqa: E731
        with self.autocast():
            out = self.model(move("image"), **{k: move(k) for k in self.inputs})
        # Losses in float32: entropy and log-softmax of fp16 logits lose too much.
        out = {k: v.float() for k, v in out.items()}
        total, terms = self.criterion(out, {k: move(k) for k in self.targets})
        return total, terms, out

    def validate(self):
        if self.val_loader is None:
            return None
        s = validate(self.model, self.val_loader, self.device, self.num_classes, self.amp_dtype,
                     dist.is_main(), self.crop_size)
        return 100 * s["miou"], {"val/mIoU": 100 * s["miou"], "val/pixel_acc": 100 * s["pixel_acc"]}

    def picture(self, batch, outputs):
        return sample_grid(batch, outputs, mean=self.norm[0], std=self.norm[1])


# ----------------------------------------------------------------------------- main
def run_meta(args):
    """The dataset description this run trains with; sets args.numclasses from it (SPEC's
    foreground rules, LoRM's mask, D_s and D_c, need a background class: refused without one)."""
    meta = resolve_num_classes(load_meta(args.dataset_path), args.numclasses)
    args.numclasses = meta.num_classes
    # D_s's seeds are the foreground scribbles, D_c's the foreground's boundary, LoRM's mask the
    # pseudo-label's foreground (SPEC §2, §4): all three mean "not background"
    terms = [what for weight, what in ((args.l_lorm, "LoRM (--l_lorm)"), (args.l_ds, "DEL on D_s (--l_ds)"),
                                       (args.l_dc, "DEL on D_c (--l_dc)")) if weight]
    if terms:
        meta.require_background(" and ".join(terms))
    return meta


def train(args) -> dict:
    inputs = Layout(args.dataset_path, folders(args)).input_folders()  # never written (utils.outputs)
    device, amp_dtype = start_run(args, SegmentationTask, inputs)
    if args.batchsize < 2 and not (dist.is_dist() and device.type == "cuda"):
        # BatchNorm (the head's image-pooling branch sees one value per channel) cannot train
        # on one sample; SyncBatchNorm over several GPUs can.
        raise TrainingError("--batchsize 1 cannot train BatchNorm on one process: use >= 2")
    meta = run_meta(args)
    criterion = CDSPLoss(args.l_seg, args.l_pseudo, args.l_ds, args.l_dc, args.l_lorm, args.label_smooth)
    model = new_model(args)
    fields = train_fields(criterion, model)
    if not args.no_check:
        require_dataset(args.dataset_path, splits=(args.train_path, args.val_path),
                        folders=folders(args), num_classes=args.numclasses, deep=False,
                        fields_by_split={args.train_path: fields, args.val_path: ("image", "mask")})
    train_loader, val_loader = build_loaders(args, fields, device, meta)
    model, optimizer = ready(model, args, device)
    task = SegmentationTask(model, optimizer, device, amp_dtype, criterion, val_loader, args.numclasses,
                            args.crop_size, meta)
    task.checkpoint_extra = {"kind": task.kind, "dataset_meta": meta.to_dict()}  # inference then needs no dataset
    run_args = vars(args) | {"world_size": dist.world_size()}
    result = fit(task, train_loader, args, run_args, {"train_fields": list(fields)})
    return {"best_miou": result["best_miou"], "val_miou": result["val_miou"]}


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run_main(lambda: train(args), (DatasetError, CheckpointError, TrainingError),
                        "the last checkpoint written is intact")
    finally:
        end_run()  # the --logdir lock, however the run ended


if __name__ == "__main__":
    sys.exit(main())
