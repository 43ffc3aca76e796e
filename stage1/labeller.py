"""Stage 1, the labeller (`make_pseudo_labels.py label`): CAM pseudo-labels for a split.

Multi-scale + flip CAMs of each image's own classes, thresholded against background, scribble
pixels kept (datasets/cam_labels.py says why each rule); written into label's own folder
(docs/outputs.md), then previewed and, when the split has full masks, scored.
"""
from __future__ import annotations

import json
import os
import re

import numpy as np
import torch
from torch.utils.data import Subset
from tqdm import tqdm

from datasets.cam_labels import cam_pseudo_label
from datasets.layout import IGNORE_INDEX, Layout, read_ids, split_path
from datasets.meta import VOC_META, meta_of_checkpoint, require_same_classes
from datasets.scribble import ScribbleDataset
from datasets.transforms import ValTransform
from models.cam import OUTPUT_STRIDE, build_cam_net, multi_scale_cam
from stage1.classifier import CAMTask, class_labels_for
from utils import dist
from utils.checkpoint import CheckpointError, load_checkpoint, load_model_weights, require_kind
from utils.engine import run_names
from utils.io import atomic_path, read_label, save_png, save_rgb_png
from utils.outputs import OutputDir, claim_output_dir
from utils.parallel import data_loader


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
    """Reads what one id needs: the image (normalised as the classifier was trained) and its scribble."""

    def __init__(self, meta):
        self.base = ValTransform(None, meta.mean, meta.std)

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
                              {"scribble": args.scribble_path}, _Labelling(meta), num_classes=meta.num_classes)
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
