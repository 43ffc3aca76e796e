"""Multi-scale sliding-window evaluation of one image (SPEC §7): eval.py's path vs the authors'.

    python bench/eval.py [--layers 18] [--model_type deeplabv2] [--size 375 500] [--threads N]
                         [--crop_batch 8] [--scales ...] [--repeat R] [--checkpoint PATH] [--amp]

One image (a synthetic VOC-sized 375x500 scene) and one model (random init, BN statistics
randomised so folding them is not a no-op; or --checkpoint), the paper's protocol: seven
scales, 465 windows, stride 310. Timed in the same process, interleaved, best of --repeat:
- authors: their evaluate.py procedure, re-implemented faithfully: the un-normalised image
  resized with cv2 per scale and padded with the mean in numpy; each window separately
  converted to a tensor, normalised channel by channel, run with batch 1, upsampled,
  softmaxed, copied back to numpy (HWC) and added into a float64 numpy accumulator; each
  scale's probabilities resized to the original size with cv2;
- batched: utils.inference.multi_scale_predict (windows of a scale in batches of --crop_batch,
  accumulation on the device), on the plain model;
- eval.py: the same on the model eval.py runs (prepare_for_inference: BN folded into the
  convs, channels-last).
Checks the three give the same probabilities (max |diff|) and the same labels, and prints the
time ratios; then the network's FLOPs (torch's FLOP counter), the float32 GEMM rate of this
machine measured in the same run, the rate each procedure reached, and so the ceiling on any
exact speed-up (on a 2-core CPU the authors' batch-1 loop already runs near the GEMM peak). --amp adds eval.py --amp (bf16 on CPU: faster, not bit-identical; agreement shown).
On a machine whose cores are oversubscribed, --threads 1 avoids OpenMP waits on descheduled
threads, which otherwise dominate small ops.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from datasets.synthetic import sample  # noqa: E402
from datasets.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from eval import load_model_from_checkpoint, predict  # noqa: E402
from models import build_model  # noqa: E402
from utils.inference import PAPER_SCALES, prepare_for_inference  # noqa: E402


# ----------------------------------------------------------------------------- the baseline
def _authors_net_process(model, crop: np.ndarray, mean, std) -> np.ndarray:
    x = torch.from_numpy(crop.transpose((2, 0, 1))).float()
    for t, m, s in zip(x, mean, std):
        t.sub_(m).div_(s)
    x = x.unsqueeze(0)
    with torch.no_grad():
        out = model(x)["out"]
    out = F.interpolate(out, x.shape[-2:], mode="bilinear", align_corners=True)
    return F.softmax(out, dim=1)[0].data.cpu().numpy().transpose(1, 2, 0)


def _authors_scale_process(model, image, classes, crop, h, w, mean, std, stride_rate):
    ori_h, ori_w, _ = image.shape
    pad_h, pad_w = max(crop - ori_h, 0), max(crop - ori_w, 0)
    pad_h_half, pad_w_half = int(pad_h / 2), int(pad_w / 2)
    if pad_h > 0 or pad_w > 0:
        image = cv2.copyMakeBorder(image, pad_h_half, pad_h - pad_h_half, pad_w_half,
                                   pad_w - pad_w_half, cv2.BORDER_CONSTANT, value=mean)
    new_h, new_w, _ = image.shape
    stride = int(np.ceil(crop * stride_rate))
    grid_h = int(np.ceil(float(new_h - crop) / stride) + 1)
    grid_w = int(np.ceil(float(new_w - crop) / stride) + 1)
    prediction = np.zeros((new_h, new_w, classes), dtype=float)
    count = np.zeros((new_h, new_w), dtype=float)
    for ih in range(grid_h):
        for iw in range(grid_w):
            e_h = min(ih * stride + crop, new_h)
            s_h = e_h - crop
            e_w = min(iw * stride + crop, new_w)
            s_w = e_w - crop
            window = image[s_h:e_h, s_w:e_w].copy()
            count[s_h:e_h, s_w:e_w] += 1
            prediction[s_h:e_h, s_w:e_w, :] += _authors_net_process(model, window, mean, std)
    prediction /= np.expand_dims(count, 2)
    prediction = prediction[pad_h_half:pad_h_half + ori_h, pad_w_half:pad_w_half + ori_w]
    return cv2.resize(prediction, (w, h), interpolation=cv2.INTER_LINEAR)


def authors_predict(model, image_rgb: np.ndarray, scales, base_size: int, crop: int,
                    stride_rate: float, classes: int) -> np.ndarray:
    """(H, W, C) float64 probabilities, the authors' evaluate.py `test` loop for one image."""
    mean = [v * 255 for v in IMAGENET_MEAN]
    std = [v * 255 for v in IMAGENET_STD]
    image = image_rgb.astype(np.float32)
    h, w, _ = image.shape
    prediction = np.zeros((h, w, classes), dtype=float)
    for scale in scales:
        long_size = round(scale * base_size)
        new_h = new_w = long_size
        if h > w:
            new_w = round(long_size / float(h) * w)
        else:
            new_h = round(long_size / float(w) * h)
        scaled = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        prediction += _authors_scale_process(model, scaled, classes, crop, h, w, mean, std, stride_rate)
    return prediction / len(scales)


# ----------------------------------------------------------------------------- the bench
def windows_per_scale(h, w, scales, base_size, crop, stride_rate) -> list[int]:
    from utils.inference import scaled_size, sliding_window_windows
    stride = math.ceil(crop * stride_rate)
    out = []
    for s in scales:
        sh, sw = scaled_size(h, w, int(base_size * s + 0.5))
        out.append(len(sliding_window_windows(max(sh, crop), max(sw, crop), crop, stride)))
    return out


def make_model(args) -> torch.nn.Module:
    if args.checkpoint:
        model, _ = load_model_from_checkpoint(args.checkpoint, optimize=False)
        return model
    torch.manual_seed(0)
    model = build_model(args.model_type, args.layers, 21, lorm=False).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model


def window_flops(model, crop: int) -> float:
    """FLOPs of one forward of a crop x crop window (torch's FLOP counter: 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, crop, crop))
    return float(counter.get_total_flops())


def matmul_peak_gflops(n: int = 2048, repeat: int = 5) -> float:
    """float32 GEMM rate of this machine (best of `repeat`): what a convolution can reach at best."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(timed(lambda: a @ b)[0] for _ in range(repeat))
    return 2 * n ** 3 / best / 1e9


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=18, choices=[18, 34, 50, 101])
    ap.add_argument("--model_type", default="deeplabv2", choices=["deeplabv2", "deeplabv3p"])
    ap.add_argument("--checkpoint", default=None, help="evaluate this checkpoint's model instead")
    ap.add_argument("--size", type=int, nargs=2, default=(375, 500), metavar=("H", "W"))
    ap.add_argument("--scales", type=float, nargs="+", default=list(PAPER_SCALES))
    ap.add_argument("--base_size", type=int, default=512)
    ap.add_argument("--crop_size", type=int, default=465)
    ap.add_argument("--crop_batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--amp", action="store_true", help="also time eval.py --amp (bf16 on CPU)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    stride_rate = 2 / 3

    image = sample("val", 0, size=tuple(args.size), seed=0)["image"]
    plain = make_model(args)
    prepared = prepare_for_inference(copy.deepcopy(plain))
    classes = int(plain.num_classes)
    n_win = windows_per_scale(*args.size, args.scales, args.base_size, args.crop_size, stride_rate)
    print(f"image {args.size[0]}x{args.size[1]}, {plain.model_type} R{plain.depth}, "
          f"scales {args.scales}: windows per scale {n_win} (total {sum(n_win)}), "
          f"crop {args.crop_size}, crop_batch {args.crop_batch}, threads {torch.get_num_threads()}")

    kw = dict(scales=args.scales, base_size=args.base_size, crop_size=args.crop_size,
              stride_rate=stride_rate, crop_batch=args.crop_batch)
    runs = {
        "authors (one window at a time)": lambda: authors_predict(
            plain, image, args.scales, args.base_size, args.crop_size, stride_rate, classes),
        "batched, plain model": lambda: predict(plain, image, **kw),
        "eval.py (batched, folded BN, NHWC)": lambda: predict(prepared, image, **kw),
    }
    if args.amp:
        runs["eval.py --amp (bf16 on CPU)"] = lambda: predict(prepared, image, amp=True, **kw)
    with torch.inference_mode():  # warm-up: oneDNN primitive creation is not what we measure
        x = torch.zeros(1, 3, args.crop_size, args.crop_size)
        plain(x), prepared(x)
    times = {k: [] for k in runs}
    outputs = {}
    for _ in range(args.repeat):
        for name, fn in runs.items():
            dt, out = timed(fn)
            times[name].append(dt)
            outputs[name] = out
    names = list(runs)
    ref = torch.from_numpy(outputs[names[0]].transpose(2, 0, 1)).float()
    ref_label = ref.argmax(0)
    top2 = ref.topk(2, dim=0).values
    clear = (top2[0] - top2[1]) > 1e-4  # pixels whose label is not a float-rounding tie
    base = min(times[names[0]])
    ok = True
    print(f"{'procedure':<38} {'time s':>8} {'speed-up':>9} {'max |dp|':>10} {'labels equal':>13}")
    for name in names:
        probs = outputs[name].float().cpu() if isinstance(outputs[name], torch.Tensor) else ref
        diff = float((probs - ref).abs().max())
        label = probs.argmax(0)
        agree = float((label == ref_label).float().mean())
        exact = "amp" in name or bool(((label == ref_label) | ~clear).all())
        ok &= exact
        print(f"{name:<38} {min(times[name]):>8.2f} {base / min(times[name]):>8.2f}x "
              f"{diff:>10.2e} {100 * agree:>12.4f}%")
    print("identical predictions (labels; probabilities to float rounding):", "yes" if ok else "NO")

    # Why the exact speed-up is bounded: every exact procedure runs the same windows, i.e. the
    # same convolution FLOPs; once the baseline runs near the CPU's float32 GEMM rate, nothing
    # exact can be much faster (bf16 --amp is faster only because the CPU does bf16 at 2x).
    flops = sum(n_win) * window_flops(prepared, args.crop_size)
    peak = matmul_peak_gflops()
    print(f"network work: {flops / 1e9:.0f} GFLOP ({sum(n_win)} windows); this CPU's float32 GEMM "
          f"peak, measured now: {peak:.0f} GFLOPS")
    for name in names:
        rate = flops / min(times[name]) / 1e9
        print(f"  {name:<38} {rate:>6.0f} GFLOPS = {100 * rate / peak:>3.0f} % of peak")
    print(f"ceiling for any exact float32 procedure: {peak * min(times[names[0]]) / flops * 1e9:.2f}x "
          f"over the authors' (their GFLOPS -> peak)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
