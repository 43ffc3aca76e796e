"""Evaluate a CDSP checkpoint with the paper's protocol (SPEC §7): multi-scale sliding window.

    python eval.py --checkpoint_path log/train_deeplabv2_r50/last_checkpoint.pth \\
                   --dataset_path dataset/ScribbleSup/VOC2012 --save_path emlc_r50_deeplabv2
    torchrun --nproc_per_node N eval.py ...      # each rank scores its share of the images once

For every image of the split: resize so the long side is base_size*s for each scale s, slide a
crop_size window with stride ceil(crop_size*stride_rate) (images smaller than the crop are
padded with the mean), average the softmax over windows, resize back, average over scales,
argmax; score against the full masks (ignore 255). The windows of one scale go through the
network crop_batch at a time; probabilities accumulate on the device (utils/inference.py), at the
scaled sizes: the full-size labels come in bands of rows, so memory does not grow with the
image beyond the image and its label (--crf holds the image's C x H x W probabilities).
Running out of memory is one line naming the image and the settings to lower.

Writes <save_path>/<id>.png (the checkpoint's palette: dataset_meta, else VOC's), optionally <save_path>/overlay/<id>.png (image |
ground truth | prediction), and once every image is scored: <save_path>/metrics.json,
<save_path>/iou_per_class.png, <save_path>/confusion_matrix.png and, last, <save_path>.txt
(the authors' three lines, then the per-class table). A run that stops early leaves no report,
and <save_path>/UNFINISHED.txt says its predictions may mix with an earlier run's. eval.py
writes only what it owns (docs/outputs.md), checked before any work: <save_path> is a folder
it made (or an empty one), never inside the dataset root, and a <save_path>.txt that is not
one of its reports is never replaced.

The window and scale default to the checkpoint's training (`resolve_sizes`): --crop_size its
training crop and --base_size each image's own long side (scale 1 = the size training saw at
scale 1); for a checkpoint without training args (the authors') the paper's 512 / 465. A
dataset.yaml naming `metrics` adds the field's per-case Dice / HD95 / ASSD (whole volumes with a
volume index: datasets.volumes), scored from the written predictions: <save_path>/cases.csv,
the summary in metrics.json and the report.

The flag names are the authors'; the architecture comes from the flags, else the checkpoint's
saved args, else its keys (the authors' files), so `--checkpoint_path` alone usually suffices.
The authors' released `last_checkpoint.pth` loads as is (also `module.`-prefixed), with
torch.load(weights_only=True); `--trust_checkpoint` lifts that restriction.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
import time
from fractions import Fraction

import numpy as np
import torch
from tqdm import tqdm

from datasets.check import require_dataset
from datasets.layout import IGNORE_INDEX, DatasetError, Layout, read_ids, split_path
from datasets.meta import (IMAGENET_MEAN, IMAGENET_STD, VOC_META, DatasetMeta, MetaError, load_meta,
                           meta_of_checkpoint, require_same_classes, resolve_num_classes)
from datasets.scribble import ScribbleDataset
from datasets.transforms import ValTransform, denormalize
from datasets.volumes import cases_of, score_cases
from models import MODEL_TYPES, build_model
from models.arch import architecture_hint, resolve_architecture
from utils import dist
from utils.checkpoint import CheckpointError, load_checkpoint, load_model_weights, require_kind
from utils.cli import naming_out_of_memory, run_main
from utils.device import DEVICE_HELP, device_flag
from utils.inference import PAPER_SCALES, multi_scale_label, multi_scale_predict, prepare_for_inference
from utils.io import OutputError, atomic_path, read_label, remove_stale_temps, save_png, save_rgb_png
from utils.metrics import (ConfusionMeter, format_report, nan_to_none, plot_confusion, plot_iou_bars,
                           scores)
from utils.outputs import OutputDir, claim_output_dir, claim_output_file
from utils.parallel import data_loader
from utils.training import single

# The authors' model names: their `_lorm` variants are the same networks plus the training-only
# LoRM, which is built whenever the checkpoint holds its weights.
MODEL_ALIASES = {"deeplabv2_lorm": "deeplabv2", "deeplabv3p_lorm": "deeplabv3p"}
REPORT_FILES = ("metrics.json", "iou_per_class.png", "confusion_matrix.png", "cases.csv")
PAPER_BASE_SIZE, PAPER_CROP_SIZE = 512, 465  # SPEC §7, for checkpoints without training args
# Present in <save_path>/ while a run writes it: a killed run's folder says it may mix runs.
UNFINISHED = "UNFINISHED.txt"
REPORT_HEAD = " * IOU_All "  # how our <save_path>.txt starts (authors_report)
EVAL_TOOL = "eval.py"  # the owner of --save_path folders (utils.outputs' mark)
# What bounds inference memory (--crf also holds an image's C x H x W probabilities).
MEMORY_HINT = "lower --base_size, --scales or --crop_batch"


# ----------------------------------------------------------------------------- arguments
def fraction(text: str) -> float:
    """'2/3' or '0.667' -> float in (0, 1]."""
    try:
        value = float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number or fraction: {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    a = p.add_argument
    # the authors' flags
    a("--checkpoint_path", required=True, help="our checkpoint or the authors' last_checkpoint.pth")
    a("--dataset_path", default="dataset/ScribbleSup/VOC2012", help="root of the SPEC §1 layout")
    a("--save_path", default="eval_results",
      help="predictions go to SAVE_PATH/<id>.png, the report to SAVE_PATH.txt")
    a("--model_type", default=None, choices=list(MODEL_TYPES) + list(MODEL_ALIASES),
      help="default: from the checkpoint")
    a("--layers", type=int, default=None, choices=[18, 34, 50, 101],
      help="ResNet depth (default: from the checkpoint)")
    a("--numclasses", type=int, default=None, help="default: from the checkpoint")
    a("--workers", type=int, default=4, help="data-loading processes (and CRF processes)")
    # data
    a("--split", "--list", dest="split", default="val", help="a split name or an id-list .txt path")
    a("--mask_path", default="SegmentationClassAug", help="ground-truth mask folder")
    a("--no_check", action="store_true", help="skip the start-up dataset check")
    # protocol (SPEC §7)
    a("--scales", type=float, nargs="+", default=list(PAPER_SCALES))
    a("--base_size", type=int, default=None,
      help="long side at scale 1 (default: each image's own for our checkpoints; 512 for the authors')")
    a("--crop_size", type=int, default=None,
      help="sliding window (default: the checkpoint's training --crop_size; 465 for the authors')")
    a("--stride_rate", type=fraction, default=2 / 3, help="window stride / crop size, e.g. 2/3")
    a("--flip", action="store_true", help="also average the mirrored image (not in the paper)")
    a("--crf", action="store_true", help="DenseCRF refinement (pydensecrf2; not in the paper)")
    # execution
    a("--crop_batch", type=int, default=8, help="windows per forward pass (bounds memory)")
    a("--device", default="auto", type=device_flag, help=DEVICE_HELP)
    a("--amp", action=argparse.BooleanOptionalAction, default=None,
      help="mixed precision (default: on with CUDA)")
    a("--overlay", action="store_true", help="also write image | ground truth | prediction pictures")
    a("--trust_checkpoint", action="store_true",
      help="unpickle arbitrary objects (weights_only=False): only for files you trust")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    check_inference_flags(p, args)
    if args.workers < 0:
        p.error("--workers must be >= 0")
    given = args.save_path
    args.save_path = os.path.normpath(given) if given.strip() else ""
    if os.path.basename(args.save_path) in ("", ".", ".."):  # '', '.', '/': no folder of its own
        p.error(f"--save_path {given!r}: name a folder of its own (predictions go into it, the report "
                f"beside it as <save_path>.txt)")
    return args


def check_inference_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The checks of the inference flags eval.py and predict.py share."""
    for name in ("crop_size", "base_size", "crop_batch"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if any(not (s > 0 and math.isfinite(s)) for s in args.scales):
        p.error(f"--scales must be positive, got {args.scales}")
    empty = [s for s in args.scales if args.base_size and int(args.base_size * s + 0.5) < 1]  # as inference
    if empty:
        p.error(f"--scales {' '.join(map(str, empty))} with --base_size {args.base_size} resize the "
                f"image's long side to 0 px (the smallest usable scale is {0.5 / args.base_size:.4g})")


def resolve_sizes(args: argparse.Namespace, info: dict) -> str:
    """Fill --crop_size / --base_size left unset from the checkpoint (load_model_from_checkpoint's
    info): its training --crop_size and each image's own long side (None), or, for a checkpoint
    without training args (the authors'), the paper's 465 / 512. Returns where they came from."""
    trained = info["args"].get("crop_size")
    said = []
    if args.crop_size is None:
        args.crop_size = int(trained) if trained else PAPER_CROP_SIZE
        said.append(f"--crop_size {args.crop_size} ({'its training crop' if trained else 'the paper'})")
    if args.base_size is None and not trained:
        args.base_size = PAPER_BASE_SIZE
        said.append(f"--base_size {PAPER_BASE_SIZE} (the paper)")
    elif args.base_size is None:
        said.append("--base_size: each image's own long side")
    return "; ".join(said)


# ----------------------------------------------------------------------------- model
def load_model_from_checkpoint(path: str, model_type: str | None = None, layers: int | None = None,
                               numclasses: int | None = None, device="cpu", trust: bool = False,
                               optimize: bool = True) -> tuple[torch.nn.Module, dict]:
    """Build the network a checkpoint needs, load its weights strictly, prepare it for inference.

    Returns (model in eval mode on `device`, info) with info = {"arch", "source", "epoch",
    "args", "dataset_meta"} ("args": the training arguments our checkpoints store, {} for the
    authors'; "dataset_meta": the DatasetMeta it was trained with, None for older files).
    Arguments left None come from the checkpoint (models.arch.resolve_architecture).
    A mismatch raises CheckpointError listing missing/unexpected keys and the flags to try.
    """
    device = torch.device(device)
    model_type = MODEL_ALIASES.get(model_type, model_type)
    ckpt = load_checkpoint(path, map_location="cpu", trust=trust, trust_flag="--trust_checkpoint")
    require_kind(ckpt, path, "segmentation", "eval.py / predict.py")
    arch, source = resolve_architecture(ckpt, model_type, layers, numclasses)
    try:
        model = build_model(arch["model_type"], int(arch["layers"]), int(arch["numclasses"]),
                            lorm=arch["lorm"], pretrained=None)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    load_model_weights(model, ckpt["state_dict"], path, hint=architecture_hint(ckpt["state_dict"], arch))
    model.drop_lorm()  # LoRM only adds a training loss (SPEC §4): loaded, checked, dropped
    model.to(device)
    if optimize:
        prepare_for_inference(model)  # BN folded into convs, NHWC: same predictions, faster
    else:
        model.eval()
    saved = ckpt.get("args") if isinstance(ckpt.get("args"), dict) else {}
    try:
        meta = meta_of_checkpoint(ckpt)
    except MetaError as e:
        raise CheckpointError(f"{path}: {e}") from None
    if meta is not None and meta.num_classes != int(arch["numclasses"]):
        raise CheckpointError(f"{path}: the model predicts {arch['numclasses']} classes but the "
                              f"checkpoint's dataset_meta names {meta.num_classes} "
                              f"({meta.preview()}); "
                              + ("drop --numclasses" if source["numclasses"] == "flag"
                                 else "the checkpoint is inconsistent"))
    return model, {"arch": arch, "source": source, "epoch": ckpt.get("epoch"), "args": saved,
                   "dataset_meta": meta}


def _as_input(image, device, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """(1, 3, H, W) normalised float tensor from a normalised (3,H,W)/(1,3,H,W) tensor or an
    HxWx3 uint8 RGB array (normalised exactly as the dataset does, with `mean` / `std`)."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
        image = ValTransform(None, mean, std)({"image": image})["image"]
    if image.dim() == 3:
        image = image[None]
    return image.to(device, torch.float32, non_blocking=True)


def _protocol(inference, model, image, scales, base_size, crop_size, stride_rate, flip, crop_batch, amp,
              mean, std):
    device = next(model.parameters()).device
    x = _as_input(image, device, mean, std)
    return inference(model, x, scales=tuple(scales), base_size=base_size or max(x.shape[-2:]),
                     crop=crop_size, stride_rate=stride_rate, flip=flip, crop_batch=crop_batch, amp=amp)


def predict(model, image, scales=PAPER_SCALES, base_size: int | None = 512, crop_size: int = 465,
            stride_rate: float = 2 / 3, flip: bool = False, crop_batch: int = 8,
            amp: bool = False, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Class probabilities (C, H, W) of one image at its original size, by SPEC §7's protocol.

    `image`: HxWx3 uint8 RGB (numpy, normalised here with `mean` / `std`) or a normalised
    (3, H, W) tensor; argmax(0) is the label (predict_label gives it without holding C x H x W
    floats). base_size None: the image's own long side.
    """
    return _protocol(multi_scale_predict, model, image, scales, base_size, crop_size, stride_rate,
                     flip, crop_batch, amp, mean, std)[0]


def predict_label(model, image, scales=PAPER_SCALES, base_size: int | None = 512, crop_size: int = 465,
                  stride_rate: float = 2 / 3, flip: bool = False, crop_batch: int = 8,
                  amp: bool = False, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """predict(...).argmax(0) as (H, W) uint8, in memory bounded whatever the image's size
    (utils.inference.multi_scale_label)."""
    return _protocol(multi_scale_label, model, image, scales, base_size, crop_size, stride_rate,
                     flip, crop_batch, amp, mean, std)


# ----------------------------------------------------------------------------- outputs
def overlay_picture(image: np.ndarray, mask: np.ndarray, pred: np.ndarray, alpha: float = 0.6,
                    meta: DatasetMeta = VOC_META) -> np.ndarray:
    """image | ground truth over the image | prediction over the image side by side, 4 px white
    gaps between: an (H, 3W + 8, 3) uint8 picture.

    Colours are `meta`'s; ignored ground-truth pixels (255) keep VOC's cream colour, fully opaque.
    """
    def blend(label):
        colour = meta.colorize(label).astype(np.float32)
        out = (1 - alpha) * image.astype(np.float32) + alpha * colour
        out[label == IGNORE_INDEX] = colour[label == IGNORE_INDEX]
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([image, gap, blend(mask), gap, blend(pred)], axis=1)


def authors_report(s: dict) -> str:
    """The three lines the authors' evaluate.py wrote (fractions; IoU of an absent class: nan)."""
    iou = np.array2string(np.asarray(s["iou"]), separator=" ", max_line_width=10**6,
                          formatter={"float_kind": lambda v: f"{v:.8f}"})
    return f" * IOU_All {s['miou']}\n * IOU_Ind {iou}\n * ACC_Pix {s['pixel_acc']}\n"


def claim_save_path(args, ids: list[str], inputs: list[str], create: bool) -> OutputDir:
    """eval.py's outputs under the ownership rule (utils.outputs), checked (create=False: before
    any work, nothing made) or claimed: <save_path>/ is eval.py's folder (never inside the
    dataset or one of its `inputs` folders, never a folder holding files eval.py did not write)
    and will hold <id>.png, overlay/<id>.png and the report files; <save_path>.txt beside it
    is replaced only if it is one of our reports."""
    root, target = os.path.realpath(args.dataset_path), os.path.realpath(args.save_path)
    if os.path.commonpath([root, target]) == root:
        raise OutputError(f"--save_path {args.save_path}: inside the dataset root {args.dataset_path}; "
                          f"predictions must not mix with the data (choose a folder outside it)")
    out = claim_output_dir(args.save_path, EVAL_TOOL, "--save_path", inputs, create=create)
    claim_output_file(args.save_path + ".txt", EVAL_TOOL, "--save_path's report", _is_our_report, inputs)
    names = [f"{i}.png" for i in ids] + [f"overlay/{i}.png" for i in ids if args.overlay]
    (out.claim if create else out.check)(names + [*REPORT_FILES, UNFINISHED])
    return out


def _is_our_report(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(len(REPORT_HEAD)) == REPORT_HEAD
    except OSError:
        return False


def begin_report(out: OutputDir, save_path: str) -> None:
    """Remove the previous run's report (it must not pass for this run's if this one stops
    early; claim_save_path has made sure the .txt is ours, `out.remove` deletes only files
    eval.py wrote) and mark the existing folder UNFINISHED until this run's report is written."""
    if os.path.isfile(save_path + ".txt"):
        os.remove(save_path + ".txt")
    for name in REPORT_FILES:
        out.remove(name)
    with atomic_path(out.path(UNFINISHED)) as tmp, open(tmp, "w") as f:
        f.write("An eval.py run is writing this folder or was stopped before its report: the\n"
                "predictions here may mix that run's with an earlier run's. The file goes away when\n"
                "a run finishes.\n")


def write_report(args, conf: torch.Tensor, s: dict, info: dict, extra: dict, class_names,
                 case_text: str = "") -> None:
    """metrics.json and the pictures first, the .txt last: its presence means "finished"."""
    metrics = {"miou": s["miou"], "pixel_acc": s["pixel_acc"], "mean_acc": s["mean_acc"],
               "iou": dict(zip(class_names, s["iou"])), "confusion_matrix": conf.tolist(),
               "checkpoint": os.path.abspath(args.checkpoint_path), "architecture": info["arch"],
               "protocol": {"scales": args.scales, "base_size": args.base_size,
                            "crop_size": args.crop_size, "stride_rate": args.stride_rate,
                            "flip": args.flip, "crf": args.crf, "split": args.split},
               "absent_class_iou": "NaN (class in neither ground truth nor prediction; "
                                   "left out of mIoU)"} | extra
    text = json.dumps(nan_to_none(metrics), indent=1)  # NaN is not JSON: an absent class is null
    # one line per list of numbers (a confusion-matrix row), not one line per number
    text = re.sub(r"\[\s+([^\[\]{}\"]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    with atomic_path(os.path.join(args.save_path, "metrics.json")) as tmp, open(tmp, "w") as f:
        f.write(text + "\n")
    plot_iou_bars(s, class_names, os.path.join(args.save_path, "iou_per_class.png"))
    plot_confusion(conf, class_names, os.path.join(args.save_path, "confusion_matrix.png"))
    with atomic_path(args.save_path + ".txt") as tmp, open(tmp, "w") as f:
        f.write(authors_report(s) + "\n" + format_report(s, class_names) + case_text)
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(args.save_path, UNFINISHED))


# ----------------------------------------------------------------------------- evaluation
def evaluate(args) -> dict:
    try:
        device = dist.init_distributed(args.device)
    except RuntimeError as e:  # e.g. --device cuda without CUDA
        raise ValueError(str(e)) from None
    main_proc = dist.is_main()
    amp = (device.type == "cuda") if args.amp is None else args.amp
    folders = {"mask": args.mask_path}
    inputs = Layout(args.dataset_path, folders).input_folders()
    ids = read_ids(split_path(args.dataset_path, args.split))
    claim_save_path(args, ids, inputs, create=False)  # every rank, before any work: none may wait for another
    if not args.no_check:  # on every rank: a rank that raised alone would leave the others waiting
        require_dataset(args.dataset_path, splits=(args.split,), folders=folders, deep=False,
                        fields_by_split={args.split: ("image", "mask")})
    model, info = load_model_from_checkpoint(args.checkpoint_path, args.model_type, args.layers,
                                             args.numclasses, device, args.trust_checkpoint)
    num_classes = int(info["arch"]["numclasses"])
    # The checkpoint's own description (the dataset must share it), else the dataset's
    # (the authors' checkpoints: a 21-class net on VOC's names)
    meta, data_meta = info["dataset_meta"], load_meta(args.dataset_path)
    if meta is None:
        meta = resolve_num_classes(data_meta, num_classes, "the checkpoint's class count")
    else:
        require_same_classes(meta, data_meta, args.checkpoint_path)
    class_names = list(meta.classes)
    sizes = resolve_sizes(args, info)
    dataset = ScribbleDataset(args.dataset_path, args.split, ("image", "mask"), folders,
                              ValTransform(None, meta.mean, meta.std), num_classes=num_classes)
    # the field's per-case scores when the dataset asks for them; a partial volume fails now
    cases = cases_of(args.dataset_path, dataset.ids, data_meta) if data_meta.metrics else None
    crf = None
    if args.crf:
        from utils.crf import ParallelCRF  # lazy: pydensecrf2 is optional
        crf = ParallelCRF(processes=max(1, args.workers))
    if main_proc:
        arch = ", ".join(f"{k}={v} ({info['source'][k]})" for k, v in info["arch"].items())
        print(f"model: {arch}; epoch {info['epoch']}" + (f"; {sizes}" if sizes else ""))
    if main_proc:
        out = claim_save_path(args, ids, inputs, create=True)
        remove_stale_temps(os.path.dirname(os.path.abspath(args.save_path)), args.save_path + ".txt")
        begin_report(out, args.save_path)
    dist.barrier()  # the others write there only once the stale temp files are gone
    if not main_proc:  # they write only names rank 0 claimed
        out = claim_output_dir(args.save_path, EVAL_TOOL, "--save_path", create=False)

    loader = data_loader(dataset, batch_size=1, sampler=dist.ShardSampler(len(dataset)),
                         num_workers=args.workers, collate_fn=single,
                         pin_memory=device.type == "cuda")
    meter = ConfusionMeter(num_classes, IGNORE_INDEX, device=device)
    meter_raw = ConfusionMeter(num_classes, IGNORE_INDEX, device=device) if crf else None

    def finish(id_, image, mask, pred):
        """Score one final prediction (H, W) and write its files."""
        meter.update(pred, mask)
        pred_np = pred.to("cpu", torch.uint8).numpy()
        save_png(pred_np, out.path(f"{id_}.png"), palette=meta.palette_array())
        if args.overlay:
            save_rgb_png(overlay_picture(image, mask.cpu().numpy(), pred_np, meta=meta),
                         out.path(f"overlay/{id_}.png"))

    t0 = time.time()
    try:
        bar = tqdm(loader, desc="eval", disable=not main_proc, dynamic_ncols=True)
        for sample in bar:
            mask = sample["mask"].to(device, non_blocking=True)
            infer = predict if crf else predict_label  # the label alone: bounded memory
            with naming_out_of_memory(f"image {sample['id']}"):
                pred = infer(model, sample["image"], args.scales, args.base_size, args.crop_size,
                             args.stride_rate, args.flip, args.crop_batch, amp, meta.mean, meta.std)
            image = denormalize(sample["image"], meta.mean, meta.std) if (args.overlay or crf) else None
            if crf is None:
                finish(sample["id"], image, mask, pred)
            else:  # the CRF of this image runs in a worker while the network takes the next one
                probs = pred  # the CRF starts from the probabilities
                meter_raw.update(probs.argmax(0), mask)
                crf.submit((sample["id"], image, mask), image, probs.float().cpu().numpy())
                for (id_, img, m), label in crf.ready():
                    finish(id_, img, m, torch.from_numpy(label).to(device))
            bar.set_postfix(mIoU=f"{100 * meter.scores()['miou']:.2f}")
        if crf is not None:
            for (id_, img, m), label in crf.close():
                finish(id_, img, m, torch.from_numpy(label).to(device))
    finally:
        if crf is not None:
            crf.terminate()

    meter.all_reduce()  # every image was scored on exactly one rank (ShardSampler)
    s = scores(meter.conf)
    extra = {"images": len(dataset), "seconds": round(time.time() - t0, 1),
             "world_size": dist.world_size()}
    if meter_raw is not None:
        meter_raw.all_reduce()
        extra["without_crf"] = {k: v for k, v in scores(meter_raw.conf).items() if k in ("miou", "pixel_acc")}
    case_text = ""
    if cases is not None:  # every rank's predictions are written (all_reduce above); each scores a share
        layout = dataset.layout
        table = score_cases(cases, lambda i: (read_label(out.path(f"{i}.png")), read_label(layout.path("mask", i))),
                            data_meta, progress=main_proc, sharded=True)
        if main_proc:
            table.write_csv(out.path("cases.csv"))
            extra["cases"] = table.summary()
            case_text = "\n" + table.report(extra["cases"])
    if main_proc:
        write_report(args, meter.conf, s, info, extra, class_names, case_text)
        print(authors_report(s) + "\n" + format_report(s, class_names) + case_text, end="")
        print(f"predictions in {args.save_path}/, report in {args.save_path}.txt")
    return s


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_main(lambda: evaluate(args),
                    (DatasetError, CheckpointError, FileNotFoundError, ValueError, ImportError),
                    "no report written", memory_hint=MEMORY_HINT + (" or drop --crf" if args.crf else ""))


if __name__ == "__main__":
    sys.exit(main())
