"""Stage 1 of CDSP: pseudo-labels from the classes the scribbles reveal (CAM), in the SPEC §1 layout.

    python -m datasets.class_labels --root DIR                 # which classes each image holds
    python make_pseudo_labels.py train --dataset_path DIR --logdir log/cam_r50
    python make_pseudo_labels.py label --dataset_path DIR --checkpoint_path log/cam_r50/last_checkpoint.pth \
                                       --out cam_pseudo
    torchrun --nproc_per_node N make_pseudo_labels.py train|label ...   # DDP / sharded, like train.py

`train` fits the multi-label CAM classifier (models/cam.py: torchvision ResNet, ImageNet init by
default) to the image-level labels of <root>/class_labels_<split>.json (written by
datasets.class_labels; computed from the scribbles when absent), with the multi-label
soft-margin loss, SGD, warm-up + cosine lr per iteration (utils.engine: train.py's loop), and
validates each epoch with the per-class F1 of the val split's classes (from the full masks when
they exist, else the scribbles). Checkpoints, metrics.csv, curves.png and TensorBoard go to
--logdir (locked while the run lives; one holding a run needs --resume or --start_over, as
train.py's: docs/outputs.md); --resume auto continues exactly.

`label` writes <root>/<out>/<id>.png for every id of --split (mode P, VOC palette; values 0..C-1
and 255 = unsure): multi-scale + flip CAMs of the image's own classes, thresholded against
background, scribble pixels kept (datasets/cam_labels.py says why each rule). --out is label's
own folder (docs/outputs.md): never one the dataset reads (images, masks, scribbles, maps,
another pseudo-label folder), whatever --overwrite says. Ids whose PNG exists are skipped, so
an interrupted run resumes (--overwrite redoes them); each PNG is written atomically. At the
end it writes a preview picture (image | CAM | pseudo-label | mask) and, if the split has full
masks, scores the folder with datasets.score_labels (eval.py's metric code) into
<checkpoint dir>/pseudo_scores_<out>.json, beside the checkpoint in the classifier's log
folder (both names checked before the work starts). Then make D_c for the new folder with
datasets.distance_map and train with `train.py --pseudo_path <out> --distancemap_c <its D_c>`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Subset
from tqdm import tqdm

from datasets.cam_labels import BG_THRESH, FG_THRESH, cam_pseudo_label
from datasets.class_labels import collect_class_labels, image_classes, is_class_labels_file, write_class_labels
from datasets.layout import IGNORE_INDEX, DatasetError, Layout, read_ids, split_path
from datasets.meta import VOC_META, load_meta, meta_of_checkpoint, require_same_classes
from datasets.scribble import ScribbleDataset
from datasets.transforms import TrainTransform, ValTransform, denormalize
from models.cam import CAM_DEPTHS, CAM_SCALES, OUTPUT_STRIDE, build_cam_net, multi_scale_cam
from utils import dist
from utils.checkpoint import CheckpointError, load_checkpoint, load_model_weights, require_kind
from utils.cli import run_main
from utils.device import DEVICE_HELP, device_flag
from utils.engine import Task, add_engine_flags, check_engine_flags, end_run, fit, run_names, start_run
from utils.io import atomic_path, read_label, save_png, save_rgb_png
from utils.outputs import OutputDir, claim_output_dir, claim_output_file
from utils.parallel import data_loader
from utils.training import TrainingError, distributed, pretrained_error, shuffled_loader, unwrap

# The classifier's outputs are the foreground classes 1..C-1 of the dataset's description
# (datasets.meta; VOC: 20), stored in its checkpoints' dataset_meta.


# ----------------------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    sub = p.add_subparsers(dest="command", required=True)

    def common(s):
        a = s.add_argument
        a("--dataset_path", default="dataset/ScribbleSup/VOC2012", help="root of the SPEC §1 layout")
        a("--scribble_path", default="pascal_2012_scribble", help="scribble folder under the root")
        a("--class_labels", default=None,
          help="image-level labels JSON (default <root>/class_labels_<split>.json; computed from "
               "the scribbles when the file does not exist)")
        a("--workers", type=int, default=4)

    t = sub.add_parser("train", help="fit the CAM classifier to the scribbles' image-level labels")
    common(t)
    a = t.add_argument
    a("--train_path", default="train", help="train id list: a split name or a .txt path")
    a("--val_path", default="val", help="val id list ('none': no validation)")
    a("--layers", type=int, default=50, choices=CAM_DEPTHS, help="torchvision ResNet depth")
    a("--output_stride", type=int, default=OUTPUT_STRIDE, choices=(8, 16),
      help="CAM resolution: 16 (IRN) or 8 (small images)")
    a("--pretrained", default="imagenet", help="imagenet (torchvision IMAGENET1K_V1), none, or a file")
    a("--crop_size", type=int, default=512, help="IRN's 512: a whole VOC image fits, labels stay true")
    a("--scale_range", type=float, nargs=2, default=(0.7, 1.3), help="random rescale range")
    a("--batchsize", type=int, default=16, help="per process")
    a("--lr", type=float, default=0.1, help="head lr; the pretrained backbone gets lr/10 (IRN)")
    a("--wdecay", type=float, default=1e-4)
    a("--momentum", type=float, default=0.9)
    add_engine_flags(t, logdir="log/cam_r50", epochs=5, warmup=0, seed=0)

    lab = sub.add_parser("label", help="write CAM pseudo-labels for a split")
    common(lab)
    a = lab.add_argument
    a("--checkpoint_path", default="log/cam_r50/last_checkpoint.pth", help="a `train` checkpoint")
    a("--split", default="train", help="a split name or an id-list .txt path")
    a("--out", default="cam_pseudo", help="output folder: a name under the root, or a path")
    a("--scales", type=float, nargs="+", default=list(CAM_SCALES))
    a("--flip", action=argparse.BooleanOptionalAction, default=True, help="add the mirrored image")
    a("--fg_thresh", type=float, default=FG_THRESH, help="CAM score from which a class claims a pixel")
    a("--bg_thresh", type=float, default=BG_THRESH, help="CAM score below which a pixel is background")
    a("--scribble_override", action=argparse.BooleanOptionalAction, default=True,
      help="scribble pixels keep the scribble's class")
    a("--overwrite", action="store_true", help="redo ids whose pseudo-label already exists")
    a("--preview", type=int, default=6, help="images in the preview picture (0: none)")
    a("--trust_checkpoint", action="store_true", help="torch.load with weights_only=False")
    a("--device", default="auto", type=device_flag, help=DEVICE_HELP)
    return p


# What a resumed classifier run must share with the run that wrote its checkpoint.
CAM_RESUME_KEYS = ("layers", "output_stride", "crop_size", "scale_range", "train_path",
                   "class_labels", "batchsize", "lr", "wdecay", "momentum", "epochs", "warmup",
                   "seed", "world_size")


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.command == "train":
        for name in ("batchsize", "crop_size"):
            if getattr(args, name) < 1:
                build_parser().error(f"--{name} must be >= 1")
        check_engine_flags(build_parser(), args)
    else:
        if not 0 <= args.bg_thresh <= args.fg_thresh:
            build_parser().error("need 0 <= --bg_thresh <= --fg_thresh")
        if not args.scales or not all(s > 0 and math.isfinite(s) for s in args.scales):
            build_parser().error(f"--scales must be positive numbers, got {args.scales}")
    return args


# ----------------------------------------------------------------------------- class labels
def class_labels_for(args, split: str, num_classes: int) -> dict[str, list[int]]:
    """{id: foreground classes} of `split`: the JSON if it exists, else from the scribbles.

    Rank 0 writes the computed file (so the next run and `label` use the same labels).
    """
    name = os.path.splitext(os.path.basename(split))[0]
    path = args.class_labels or os.path.join(args.dataset_path, f"class_labels_{name}.json")
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                labels = json.load(f)
        except (OSError, ValueError) as e:
            raise DatasetError(f"{path}: cannot read class labels ({e})") from None
        bad = [k for k, v in labels.items()
               if not isinstance(v, list) or any(not isinstance(c, int) or not 0 < c < num_classes for c in v)]
        if bad:
            raise DatasetError(f"{path}: entries must be lists of classes 1..{num_classes - 1}; "
                               f"bad: {bad[:5]}")
        missing = [i for i in read_ids(split_path(args.dataset_path, split)) if i not in labels]
        if missing:
            raise DatasetError(f"{path}: no class labels for {len(missing)} id(s) of {split}, e.g. "
                               f"{missing[:3]}; rerun python -m datasets.class_labels")
        return labels
    # the file it will write: never a folder, never inside one of the dataset's folders
    claim_output_file(path, "make_pseudo_labels.py", "--class_labels", is_class_labels_file,
                      Layout(args.dataset_path, {"scribble": args.scribble_path}).input_folders())
    labels, _ = collect_class_labels(args.dataset_path, split, {"scribble": args.scribble_path},
                                     num_classes=num_classes, progress=dist.is_main())
    if dist.is_main():
        write_class_labels(labels, path)
        print(f"class labels computed from the scribbles and written to {path}")
    return labels


def multi_hot(classes: list[int], num_fg: int) -> torch.Tensor:
    """(K,) target of the classifier: 1 at channel c-1 for each foreground class c."""
    y = torch.zeros(num_fg)
    y[[c - 1 for c in classes]] = 1.0
    return y


# ----------------------------------------------------------------------------- training
class _MaskClasses:
    """Val transform that also turns the full mask (or scribble) into the image's classes."""

    def __init__(self, field: str, num_classes: int):
        self.field, self.base, self.num_classes = field, ValTransform(None), num_classes

    def __call__(self, sample: dict) -> dict:
        classes = image_classes(sample[self.field], self.num_classes)  # values checked by the dataset
        out = self.base({k: v for k, v in sample.items() if k != self.field})
        out["target"] = multi_hot(classes, self.num_classes - 1)
        return out


def _val_set(args, num_classes: int):
    """The val split with its classes from the masks (else the scribbles); None if absent."""
    if args.val_path == "none":
        return None
    root = args.dataset_path
    if not os.path.isfile(split_path(root, args.val_path)):
        if dist.is_main():
            print(f"no {split_path(root, args.val_path)}: training without validation")
        return None
    layout = Layout(root, {"scribble": args.scribble_path})
    field = "mask" if os.path.isdir(layout.folder("mask")) else "scribble"
    return ScribbleDataset(root, args.val_path, ("image", field), {"scribble": args.scribble_path},
                           _MaskClasses(field, num_classes), num_classes=num_classes)


@torch.inference_mode()
def validate(model, loader, device, classes) -> dict:
    """Per-class F1 of sigmoid > 0.5 over the split (counts summed over ranks); `classes`: the
    dataset's names, background first."""
    model.eval()
    num_fg = len(classes) - 1
    counts = torch.zeros((3, num_fg), device=device, dtype=torch.float64)  # tp, fp, fn
    for s in loader:
        pred = model(s["image"][None].to(device, non_blocking=True)).float()[0] > 0
        y = s["target"].to(device, non_blocking=True) > 0.5
        counts += torch.stack([pred & y, pred & ~y, ~pred & y]).double()
    dist.all_reduce_sum(counts)
    model.train()
    tp, fp, fn = counts
    support = (tp + fn) > 0
    f1 = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
    return {"f1": float(f1[support].mean()) if support.any() else float("nan"),
            "per_class_f1": {classes[c + 1]: float(f1[c]) for c in range(num_fg) if support[c]}}


def cam_grid(model, batch, n: int = 4) -> np.ndarray:
    """Rows of image | CAM of each labelled class (jet, max over classes): what the net looks at."""
    import matplotlib
    cmap = matplotlib.colormaps["jet"]
    with torch.no_grad():
        was = model.training
        model.eval()
        cams = model.cam(batch["image"][:n].to(next(model.parameters()).device, non_blocking=True)).float()
        model.train(was)
    cams = F.interpolate(cams, size=batch["image"].shape[-2:], mode="bilinear", align_corners=False)
    rows = []
    for i in range(min(n, len(cams))):
        own = batch["target"][i] > 0.5
        m = cams[i][own.to(cams.device)].amax(0) if own.any() else torch.zeros_like(cams[i, 0])
        m = (m / (m.max() + 1e-5)).cpu().numpy()
        img = denormalize(batch["image"][i])
        heat = (cmap(m)[..., :3] * 255).astype(np.uint8)
        rows.append(np.concatenate([img, (0.5 * img + 0.5 * heat).astype(np.uint8)], axis=1))
    return np.concatenate(rows, axis=0)


class CAMTask(Task):
    """The stage-1 classifier's training for utils.engine.fit: multi-label soft margin on the
    image-level labels the scribbles reveal."""

    val_key, val_name = "val_f1", "mean F1"
    desc = "CAM epoch"
    picture_file, picture_tag = "train_cams.png", "train/image|CAM"
    tool, kind = "make_pseudo_labels.py train", "cam_classifier"
    resume_keys = CAM_RESUME_KEYS
    resume_hint = "resume with the same --layers/--output_stride as the run that wrote it"

    def __init__(self, model, optimizer, device, amp_dtype, labels: dict, meta, val_loader=None):
        super().__init__(model, optimizer, device, amp_dtype)
        self.labels, self.meta, self.val_loader = labels, meta, val_loader
        self.checkpoint_extra = {"kind": self.kind, "dataset_meta": meta.to_dict()}

    def loss(self, batch):
        num_fg = self.meta.num_classes - 1
        target = torch.stack([multi_hot(self.labels[i], num_fg) for i in batch["id"]]).to(self.device,
                                                                                        non_blocking=True)
        with self.autocast():
            logits = self.model(batch["image"].to(self.device, non_blocking=True))
        loss = F.multilabel_soft_margin_loss(logits.float(), target)
        return loss, {"multilabel": loss}, {"target": target}

    def validate(self):
        if self.val_loader is None:
            return None
        s = validate(self.model, self.val_loader, self.device, self.meta.classes)
        return 100 * s["f1"], {"val/mean_F1": 100 * s["f1"]}

    def picture(self, batch, outputs):
        return cam_grid(unwrap(self.model), batch | {"target": outputs["target"].cpu()})


def train(args) -> dict:
    inputs = Layout(args.dataset_path, {"scribble": args.scribble_path}).input_folders()
    device, amp_dtype = start_run(args, CAMTask, inputs)
    main_proc = dist.is_main()
    meta = load_meta(args.dataset_path)
    meta.require_background("the CAM stage (classes present vs background)")
    labels = class_labels_for(args, args.train_path, meta.num_classes)
    empty = [i for i in read_ids(split_path(args.dataset_path, args.train_path)) if not labels.get(i)]
    train_set = ScribbleDataset(args.dataset_path, args.train_path, ("image",), None,
                                TrainTransform(args.crop_size, tuple(args.scale_range)))
    if main_proc and empty:
        print(f"{len(empty)} of {len(train_set)} training ids have no foreground class: they teach "
              f"'no object here' (all-zero targets)")
    loader = shuffled_loader(train_set, args.batchsize, args.workers, args.seed, device)
    val_set = _val_set(args, meta.num_classes)
    val_loader = None if val_set is None else data_loader(
        val_set, batch_size=None, sampler=dist.ShardSampler(len(val_set)), num_workers=args.workers,
        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)

    try:
        model = build_cam_net(args.layers, meta.num_classes - 1, args.pretrained, args.output_stride).to(device)
    except (OSError, ValueError, RuntimeError) as e:  # a wrong --pretrained file, no network
        raise pretrained_error(args.pretrained, e) from None
    groups = model.param_groups()
    model = distributed(model, device, sync_bn=not model.frozen_bn)
    optimizer = torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum, weight_decay=args.wdecay)
    task = CAMTask(model, optimizer, device, amp_dtype, labels, meta, val_loader)
    return fit(task, loader, args, vars(args) | {"world_size": dist.world_size()})


# ----------------------------------------------------------------------------- labelling
def load_cam_model(path: str, device, trust: bool = False):
    """(classifier in eval mode, the checkpoint, the DatasetMeta it was trained with)."""
    ckpt = load_checkpoint(path, map_location="cpu", trust=trust, trust_flag="--trust_checkpoint")
    require_kind(ckpt, path, CAMTask.kind, "make_pseudo_labels.py label")
    saved = ckpt.get("args") if isinstance(ckpt.get("args"), dict) else {}
    if "layers" not in saved:
        raise CheckpointError(f"{path}: a CAM classifier checkpoint without its training arguments "
                              f"(no 'layers'); use one written by `make_pseudo_labels.py train`")
    meta = meta_of_checkpoint(ckpt) or VOC_META  # written before checkpoints stored it: VOC
    model = build_cam_net(int(saved["layers"]), meta.num_classes - 1, None,
                          int(saved.get("output_stride", OUTPUT_STRIDE)))
    load_model_weights(model, ckpt["state_dict"], path)
    return model.to(device).eval(), ckpt, meta


def _out_folder(root: str, out: str) -> str:
    return out if os.path.isabs(out) or os.sep in out else os.path.join(root, out)


LABEL_TOOL = "make_pseudo_labels.py label"
_BESIDE = re.compile(r"pseudo_(preview_.+\.png|scores_.+\.json)")


def label_outputs(args, layout: Layout, ids: list[str], out_dir: str, with_scores: bool,
                  create: bool) -> tuple[OutputDir, OutputDir | None]:
    """The --out folder (label's: never a folder the dataset reads, even with --overwrite) and,
    when there is a preview or scores to write, the checkpoint's folder (the classifier's log
    folder, where they go beside it), with the names each will hold: checked when not
    `create` (before any work: nothing is made), claimed otherwise (utils.outputs)."""
    out = claim_output_dir(out_dir, LABEL_TOOL, "--out", layout.input_folders(), create=create)
    (out.claim if create else out.check)([f"{i}.png" for i in ids])
    name = os.path.basename(os.path.normpath(out_dir))
    beside = ([f"pseudo_preview_{name}.png"] if args.preview else []) + \
             ([f"pseudo_scores_{name}.json"] if with_scores else [])
    if not beside:
        return out, None
    keep = {os.path.basename(args.checkpoint_path), *run_names(CAMTask)}

    def earlier(path: str, entries: list[str]) -> bool:  # a log folder from before folders were marked
        return all(e in keep or _BESIDE.fullmatch(e) for e in entries)

    # the classifier's log folder, where `label` adds its report as the classifier's tool (its
    # temp files are left alone: a training run may be writing a checkpoint there)
    folder = claim_output_dir(os.path.dirname(os.path.abspath(args.checkpoint_path)), CAMTask.tool,
                              "--checkpoint_path's folder", layout.input_folders(), clear_temps=False,
                              create=create, earlier=earlier)
    (folder.claim if create else folder.check)(beside)
    return out, folder


class _Labelling:
    """Reads what one id needs: the image (normalised tensor) and its scribble."""

    def __init__(self):
        self.base = ValTransform(None)

    def __call__(self, sample: dict) -> dict:
        scribble = sample["scribble"]
        out = self.base({k: v for k, v in sample.items() if k != "scribble"})
        out["scribble"] = scribble
        out["rgb"] = sample["image"]
        return out


def _as_is(sample: dict) -> dict:
    return sample  # keep the scribble and the RGB image as numpy arrays


def pseudo_label_of(model, s: dict, classes: list[int], args, device) -> tuple[np.ndarray, np.ndarray]:
    """(pseudo-label (H, W) uint8, CAMs (n, H, W)) of one sample."""
    image = s["image"][None].to(device, non_blocking=True)
    cams = multi_scale_cam(model, image, classes, args.scales, args.flip)
    cams = cams.float().cpu().numpy()
    label = cam_pseudo_label(cams, classes, s["scribble"] if args.scribble_override else None,
                             args.fg_thresh, args.bg_thresh)
    return label, cams


def preview(model, dataset, labels, args, device, path: str) -> None:
    """Rows of image | CAM (max over the image's classes) | pseudo-label | mask (if any).

    Recomputes the first few ids' CAMs rather than keeping them from the labelling loop: under
    torchrun or a resumed run those ids may have been labelled elsewhere or earlier.
    """
    import matplotlib
    cmap = matplotlib.colormaps["jet"]
    layout = Layout(args.dataset_path)
    rows = []
    for i in range(min(args.preview, len(dataset))):
        s = dataset[i]
        label, cams = pseudo_label_of(model, s, labels[s["id"]], args, device)
        heat = cmap(cams.max(0) if len(cams) else np.zeros(label.shape))[..., :3] * 255
        cols = [s["rgb"], (0.5 * s["rgb"] + 0.5 * heat).astype(np.uint8), layout.meta.colorize(label)]
        mask_path = layout.path("mask", s["id"])
        if os.path.isfile(mask_path):
            cols.append(layout.meta.colorize(read_label(mask_path)))
        rows.append(np.concatenate(cols, axis=1))
    if rows:
        width = max(r.shape[1] for r in rows)
        rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
        save_rgb_png(np.concatenate(rows, axis=0), path)


def label_summary(stats: torch.Tensor) -> dict:
    """The labelling summary over all ranks from this rank's (pixels, unsure pixels, images)."""
    dist.all_reduce_sum(stats)
    return {"labelled": int(stats[2]), "unsure_fraction": float(stats[1] / stats[0]) if stats[0] else None}


def label(args) -> dict:
    device = dist.init_distributed(args.device)
    main_proc = dist.is_main()
    model, _, meta = load_cam_model(args.checkpoint_path, device, args.trust_checkpoint)
    layout = Layout(args.dataset_path, {"scribble": args.scribble_path})
    require_same_classes(meta, layout.meta, args.checkpoint_path)
    out_dir = _out_folder(args.dataset_path, args.out)
    ids = read_ids(split_path(args.dataset_path, args.split))
    with_scores = all(os.path.isfile(layout.path("mask", i)) for i in ids)
    label_outputs(args, layout, ids, out_dir, with_scores, create=False)  # refusals before any work
    labels = class_labels_for(args, args.split, meta.num_classes)
    dataset = ScribbleDataset(args.dataset_path, args.split, ("image", "scribble"),
                              {"scribble": args.scribble_path}, _Labelling(), num_classes=meta.num_classes)
    if main_proc:  # before any rank writes there: the others wait at the broadcast below
        out, beside = label_outputs(args, layout, dataset.ids, out_dir, with_scores, create=True)
    else:  # writes only names rank 0 claimed
        out = claim_output_dir(out_dir, LABEL_TOOL, "--out", create=False)
    # Decided once, on rank 0: a rank that looked later would see files others just wrote,
    # shard a different list, and leave ids unlabelled.
    todo = dist.broadcast_object([i for i, id_ in enumerate(dataset.ids)
                                  if args.overwrite or not os.path.isfile(out.path(id_ + ".png"))]
                                 if main_proc else None)
    if main_proc:
        done = len(dataset) - len(todo)
        print(f"{len(todo)} of {len(dataset)} ids to label into {out_dir}"
              + (f" ({done} already there; --overwrite redoes them)" if done else ""))
    shard = Subset(dataset, todo)
    loader = data_loader(shard, batch_size=None, sampler=dist.ShardSampler(len(shard)),
                         num_workers=args.workers, collate_fn=_as_is, pin_memory=device.type == "cuda")
    stats = torch.zeros(3, dtype=torch.float64)  # pixels, unsure pixels, images
    for s in tqdm(loader, desc="CAM pseudo-labels", unit="img", disable=not main_proc, dynamic_ncols=True):
        lab, _ = pseudo_label_of(model, s, labels[s["id"]], args, device)
        save_png(lab, out.path(s["id"] + ".png"), palette=meta.palette_array())
        stats += torch.tensor([lab.size, (lab == IGNORE_INDEX).sum(), 1], dtype=torch.float64)
    result = label_summary(stats)  # a collective: every rank has written its share after it
    scored = None
    if with_scores:
        # Every rank scores its share: none waits idle in a collective while one works alone
        # (NCCL's watchdog ends a collective that waits longer than its timeout, 10 min).
        from datasets.score_labels import score_labels
        scored = score_labels(args.dataset_path, out_dir, args.split, sharded=True)
    if not main_proc:
        return result
    if result["labelled"]:
        print(f"labelled {result['labelled']} images; {100 * result['unsure_fraction']:.1f} % of their "
              f"pixels unsure (255)")
    name = os.path.basename(os.path.normpath(out_dir))
    if args.preview:  # a few images: the other ranks wait seconds, not minutes
        pic = beside.path(f"pseudo_preview_{name}.png")
        preview(model, dataset, labels, args, device, pic)
        print(f"preview: {pic}")
    if scored is not None:
        from datasets.score_labels import UNLABELLED_NOTE, report
        from utils.metrics import nan_to_none
        print(report(scored, meta.classes))
        result["scores"] = scored
        data = {"labels": out_dir, "split": args.split, "note": UNLABELLED_NOTE, "classes": list(meta.classes),
                "fg_thresh": args.fg_thresh, "bg_thresh": args.bg_thresh, "scales": args.scales,
                "flip": args.flip, "scribble_override": args.scribble_override, **scored}
        with atomic_path(beside.path(f"pseudo_scores_{name}.json")) as tmp, open(tmp, "w") as f:
            f.write(json.dumps(nan_to_none(data), indent=1) + "\n")
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    work = train if args.command == "train" else label
    try:
        hint = "lower --batchsize or --crop_size" if args.command == "train" else "use fewer or smaller --scales"
        return run_main(lambda: work(args), (DatasetError, CheckpointError, TrainingError),
                        "finished outputs are intact; rerun to continue", memory_hint=hint)
    finally:
        end_run()  # train's --logdir lock, however the run ended


if __name__ == "__main__":
    sys.exit(main())
