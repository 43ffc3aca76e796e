"""Stage 1, the classifier (`make_pseudo_labels.py train`): a multi-label CAM classifier fitted
to the image-level labels the scribbles reveal, in the training loop train.py uses (utils.engine).

The image-level labels of a split are <root>/class_labels_<split>.json (datasets.class_labels),
computed from the scribbles when the file does not exist. Validation is the per-class F1 of
class presence on the val split (from its full masks when they exist, else its scribbles).
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch
import torch.nn.functional as F

from datasets.class_labels import collect_class_labels, image_classes, is_class_labels_file, write_class_labels
from datasets.layout import DatasetError, Layout, read_ids, split_path
from datasets.meta import load_meta
from datasets.scribble import ScribbleDataset
from datasets.transforms import TrainTransform, ValTransform, denormalize
from models.cam import build_cam_net
from utils import dist
from utils.engine import Task, fit, start_run
from utils.outputs import claim_output_file
from utils.parallel import data_loader
from utils.training import distributed, pretrained_error, shuffled_loader, unwrap

# The classifier's outputs are the foreground classes 1..C-1 of the dataset's description
# (datasets.meta; VOC: 20), stored in its checkpoints' dataset_meta.

# What a resumed classifier run must share with the run that wrote its checkpoint.
CAM_RESUME_KEYS = ("layers", "output_stride", "crop_size", "scale_range", "train_path",
                   "class_labels", "batchsize", "lr", "wdecay", "momentum", "epochs", "warmup",
                   "seed", "world_size")


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

    def __init__(self, field: str, meta):
        self.field, self.base, self.num_classes = field, ValTransform(None, meta.mean, meta.std), meta.num_classes

    def __call__(self, sample: dict) -> dict:
        classes = image_classes(sample[self.field], self.num_classes)  # values checked by the dataset
        out = self.base({k: v for k, v in sample.items() if k != self.field})
        out["target"] = multi_hot(classes, self.num_classes - 1)
        return out


def _val_set(args, meta):
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
                           _MaskClasses(field, meta), num_classes=meta.num_classes)


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


def cam_grid(model, batch, meta, n: int = 4) -> np.ndarray:
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
        img = denormalize(batch["image"][i], meta.mean, meta.std)
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
        return cam_grid(unwrap(self.model), batch | {"target": outputs["target"].cpu()}, self.meta)


def train(args) -> dict:
    inputs = Layout(args.dataset_path, {"scribble": args.scribble_path}).input_folders()
    device, amp_dtype = start_run(args, CAMTask, inputs)
    main_proc = dist.is_main()
    meta = load_meta(args.dataset_path)
    meta.require_background("the CAM stage (classes present vs background)")
    labels = class_labels_for(args, args.train_path, meta.num_classes)
    empty = [i for i in read_ids(split_path(args.dataset_path, args.train_path)) if not labels.get(i)]
    train_set = ScribbleDataset(args.dataset_path, args.train_path, ("image",), None,
                                TrainTransform(args.crop_size, tuple(args.scale_range), mean=meta.mean, std=meta.std))
    if main_proc and empty:
        print(f"{len(empty)} of {len(train_set)} training ids have no foreground class: they teach "
              f"'no object here' (all-zero targets)")
    loader = shuffled_loader(train_set, args.batchsize, args.workers, args.seed, device)
    val_set = _val_set(args, meta)
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
