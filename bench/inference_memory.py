"""Peak memory of predicting one large photo: the full-size probabilities (before) against the
labels in bands (utils.inference.multi_scale_label, what eval.py and predict.py run now).

    python bench/inference_memory.py [--size 6000 8000] [--scales 0.5 1.0] [--paper_scales]
                                     [--out bench/results/inference_memory.txt]

One random-init ResNet-18 DeepLabV2 with 21 classes and one synthetic photo (smooth colour
fields, JPEG) of --size (H W); each variant runs in its own child process, and its peak
resident memory is the child's ru_maxrss (os.wait4: the kernel's count of the pages it held,
so torch's, numpy's and OpenCV's allocations alike). Every child reads the image as predict.py
does (predict.read_rgb), loads the model as it does, predicts with --scales (base size 512, crop
465, crop batch 8, one thread) and writes the label PNG:
- image + model: the same child without the prediction (what every variant holds anyway);
- before: the procedure predict.py ran before, eval.predict(...).argmax(0): C x H x W float32
  probabilities at the image's size;
- after: eval.predict_label, the same protocol in bounded memory;
- after, the paper's 7 scales (--paper_scales): more working size, the same bound.
Then checks that before and after wrote the same labels (pixels that differ, if any), and
prints each peak, its time, and before / after. Last, on random 21-class maps at two scales'
sizes of a 1500x2000 image, how many values of the banded average are bit-identical to the
full-size average (the rest differ in the last bit, see utils.inference._band_means).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

VARIANTS = ("image + model", "before", "after", "after, paper scales")


def child(variant: str, checkpoint: str, image_path: str, out: str, scales: list[float]) -> None:
    with open("/proc/self/oom_score_adj", "w") as f:  # on a shared machine: this child, not another
        f.write("1000")
    import torch
    torch.set_num_threads(1)
    import eval as evaluation
    import predict
    from utils.io import save_png
    from utils.inference import PAPER_SCALES

    model, _ = evaluation.load_model_from_checkpoint(checkpoint, device="cpu")
    image = predict.read_rgb(image_path)
    if variant == "image + model":
        return
    protocol = dict(scales=PAPER_SCALES if variant == "after, paper scales" else scales, base_size=512,
                    crop_size=465, crop_batch=8)
    if variant == "before":
        label = evaluation.predict(model, image, **protocol).argmax(0).to(torch.uint8).numpy()
    else:
        label = evaluation.predict_label(model, image, **protocol).numpy()
    save_png(label, out)


def run_child(variant: str, args, checkpoint: str, image_path: str, out: str) -> tuple[float, float]:
    """(peak resident memory in GiB, seconds) of one variant in a fresh process."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", variant, "--checkpoint", checkpoint,
           "--image", image_path, "--label", out, "--scales", *map(str, args.scales)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"))
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{variant}: the child failed (exit {os.waitstatus_to_exitcode(status)})")
    return usage.ru_maxrss / 2**20, seconds  # Linux: ru_maxrss in KiB


def make_inputs(folder: str, size: tuple[int, int]) -> tuple[str, str]:
    import cv2
    import numpy as np
    import torch
    from models import build_model
    torch.manual_seed(0)
    checkpoint = os.path.join(folder, "r18_deeplabv2_random.pth")
    torch.save({"state_dict": build_model("deeplabv2", 18, 21, lorm=False).state_dict(), "epoch": 0,
                "args": {"model_type": "deeplabv2", "layers": 18, "numclasses": 21}}, checkpoint)
    rng = np.random.default_rng(0)
    fields = rng.integers(0, 256, (size[0] // 200 + 2, size[1] // 200 + 2, 3), dtype=np.uint8)
    photo = cv2.resize(fields, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
    photo = np.clip(photo.astype(np.int16) + rng.integers(-12, 13, photo.shape, dtype=np.int16), 0, 255)
    image_path = os.path.join(folder, "photo.jpg")
    cv2.imwrite(image_path, photo.astype(np.uint8)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    return checkpoint, image_path


def band_rounding(size=(1500, 2000), classes=21) -> str:
    import torch
    from utils import inference
    g = torch.Generator().manual_seed(0)
    maps = [torch.softmax(torch.randn(1, classes, h, w, generator=g), 1) for h, w in ((384, 512), (192, 256))]
    full = inference._mean_resized(maps, size)
    bands = torch.cat([m for _, _, m in inference._band_means(maps, *size, 64 * 2**20)], dim=2)
    same = (bands == full).double().mean().item()
    return (f"banded vs full-size average (random {classes}-class maps of 384x512 and 192x256 to {size[0]}x{size[1]}): "
            f"{100 * same:.4f} % of the values bit-identical, max |diff| {(bands - full).abs().max().item():.2g}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, nargs=2, default=(6000, 8000), metavar=("H", "W"))
    p.add_argument("--scales", type=float, nargs="+", default=[0.5, 1.0])
    p.add_argument("--paper_scales", action="store_true", help="also: after, with the paper's 7 scales")
    p.add_argument("--out", default=None, help="also write the report here")
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    p.add_argument("--image", help=argparse.SUPPRESS)
    p.add_argument("--label", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child, args.checkpoint, args.image, args.label, args.scales)

    import numpy as np
    import torch
    from PIL import Image
    from utils.inference import LABEL_WORK_BYTES
    h, w = args.size
    lines = [f"inference memory: predict on one {h}x{w} photo, R18 DeepLabV2 (random init, 21 classes), "
             f"scales {' '.join(map(str, args.scales))}, base 512, crop 465, crop batch 8, 1 thread; "
             f"LABEL_WORK_BYTES {LABEL_WORK_BYTES / 2**20:.0f} MiB; torch {torch.__version__}, "
             f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             "peak = the child process's ru_maxrss (resident memory, every allocator)", ""]
    print("\n".join(lines), flush=True)
    variants = VARIANTS if args.paper_scales else VARIANTS[:3]
    with tempfile.TemporaryDirectory() as folder:
        checkpoint, image_path = make_inputs(folder, args.size)
        results = {}
        for variant in variants:
            out = os.path.join(folder, f"{variant.replace(' ', '_').replace(',', '')}.png")
            results[variant] = run_child(variant, args, checkpoint, image_path, out) + (out,)
            line = f"  {variant:20s} peak {results[variant][0]:6.2f} GiB  {results[variant][1]:6.1f} s"
            print(line, flush=True)
            lines.append(line)
        before, after = (np.asarray(Image.open(results[v][2])) for v in ("before", "after"))
        differ = int((before != after).sum())
        image_model = results["image + model"][0]
        lines += ["", f"labels, before vs after: {differ} of {before.size} pixels differ",
                  f"peak before / after: {results['before'][0] / results['after'][0]:.1f}x; "
                  f"above image + model: {results['before'][0] - image_model:.2f} GiB before, "
                  f"{results['after'][0] - image_model:.2f} GiB after"]
        print("\n".join(lines[-3:]))
    lines.append(band_rounding())
    print(lines[-1])
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
