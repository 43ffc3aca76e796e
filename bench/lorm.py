"""Time and peak memory of LoRM (SPEC §4): foreground rows only vs the explicit full matrix.

    python bench/lorm.py [--batch B] [--size S] [--channels C] [--fg 0.5] [--repeat R] [--rounds K]

One forward + backward of L_LoRM(x, LoRM(x, m)) (losses/lorm.py) on layer4-sized features
(default B=8, 59x59 positions = a 465 crop at stride 8, C=2048, about half the positions
foreground, float32, CPU). Variants, each run in a fresh subprocess so that ru_maxrss sees only it:
- explicit:   lorm_reference, the (B, hw, hw) attention matrix: the baseline;
- fg-matmul:  LoRM.forward, foreground query rows, matmul + softmax (the CPU default);
- fg-sdpa:    LoRM.forward, foreground query rows, scaled_dot_product_attention (the CUDA default).
Peak memory = ru_maxrss after the first forward + backward minus the RSS just before it (inputs
and weights excluded). Time = the minimum over --rounds interleaved rounds of --repeat further
iterations each (the minimum is the least disturbed by other processes on a shared machine);
process CPU time is printed too. The loss and every gradient (x, query/key weights and biases,
gamma) of each variant are checked against the baseline's with allclose.
Targets (CPU): foreground rows <= 0.6x the time and <= 0.75x the peak memory of the baseline.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from losses.lorm import lorm_loss  # noqa: E402
from models.lorm import LoRM  # noqa: E402

VARIANTS = ("explicit", "fg-matmul", "fg-sdpa")
TARGET_TIME, TARGET_MEMORY = 0.6, 0.75
SHAPE_ARGS = ("batch", "size", "channels", "fg", "repeat")


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(args) -> None:
    """Run one variant; print 'wall_s cpu_s peak_mib' and save loss + gradients to args.out."""
    torch.manual_seed(0)  # the same inputs and weights in every variant
    B, C, s = args.batch, args.channels, args.size
    module = LoRM(C, fused=args.variant == "fg-sdpa")
    x = torch.randn(B, C, s, s, requires_grad=True)
    fg = torch.rand(B, s, s) < args.fg
    rectify = module.forward_reference if args.variant == "explicit" else module.forward

    def step() -> torch.Tensor:
        module.zero_grad(set_to_none=True)
        x.grad = None
        loss = lorm_loss(x, rectify(x, fg))
        loss.backward()
        return loss.detach()

    with torch.no_grad():  # first-call set-up of the math libraries, outside the measurement
        rectify(x[:1, :, :2, :2], torch.ones(1, 2, 2, dtype=torch.bool))
    before = _rss_mib()
    loss = step()
    peak = _maxrss_mib() - before
    wall, cpu = [], []
    for _ in range(args.repeat):
        t, c = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    if args.out:
        grads = {"loss": loss, "x": x.grad, **{n: p.grad for n, p in module.named_parameters()}}
        torch.save(grads, args.out)
    print(f"{min(wall):.4f} {min(cpu):.4f} {peak:.1f}")


def _compare(ref_path: str, got_path: str) -> bool:
    ref, got = torch.load(ref_path), torch.load(got_path)
    ok = True
    for name in ref:
        if not torch.allclose(got[name], ref[name], rtol=1e-4, atol=1e-6):
            ok = False
            err = (got[name] - ref[name]).abs().max().item()
            print(f"    MISMATCH {name}: max abs diff {err:.3g}")
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8, help="B (default 8, as SPEC §4 measured)")
    ap.add_argument("--size", type=int, default=59, help="feature side h=w (59 = 465 crop / 8)")
    ap.add_argument("--channels", type=int, default=2048)
    ap.add_argument("--fg", type=float, default=0.5, help="foreground fraction of positions")
    ap.add_argument("--repeat", type=int, default=2, help="timed iterations per subprocess")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of all variants")
    ap.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # worker mode
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        return worker(args)

    print(f"LoRM fwd+bwd: B={args.batch}, {args.size}x{args.size} positions, C={args.channels}, "
          f"fg~{args.fg:.0%}, float32, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds x {args.repeat} timed iterations")
    # A fixed mmap threshold makes glibc return every large tensor to the OS when it is freed, so
    # ru_maxrss follows live tensor memory. With glibc's default dynamic threshold, tensors under
    # 32 MiB (the foreground-row pieces) land on the heap and fragment it, while the explicit
    # variant's 46 MiB attention matrices do not: RSS would measure the allocator, not LoRM.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    wall = {v: [] for v in VARIANTS}
    cpu = {v: [] for v in VARIANTS}
    peak = {v: [] for v in VARIANTS}
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for v in VARIANTS:
                out = os.path.join(tmp, v + ".pt") if r == 0 else ""
                cmd = [sys.executable, os.path.abspath(__file__), f"--variant={v}", f"--out={out}",
                       *(f"--{k}={getattr(args, k)}" for k in SHAPE_ARGS)]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    print(f"variant {v} failed (out of memory? try a smaller --batch):\n"
                          f"{proc.stderr[-2000:]}", file=sys.stderr)
                    sys.exit(1)
                w, c, m = map(float, proc.stdout.split()[-3:])
                wall[v].append(w)
                cpu[v].append(c)
                peak[v].append(m)
                print(f"  round {r + 1} {v:10s} wall {w:8.2f} s  cpu {c:8.2f} s  "
                      f"peak {m:8.1f} MiB", flush=True)
                if r == 0 and v != "explicit":
                    ok &= _compare(os.path.join(tmp, "explicit.pt"), out)

    t0, c0, m0 = min(wall["explicit"]), min(cpu["explicit"]), max(peak["explicit"])
    print(f"baseline explicit: wall {t0:.2f} s, cpu {c0:.2f} s, peak {m0:.0f} MiB")
    print(f"ratios vs explicit; targets time <= {TARGET_TIME}, memory <= {TARGET_MEMORY}:")
    for v in VARIANTS[1:]:
        t, c, m = min(wall[v]) / t0, min(cpu[v]) / c0, max(peak[v]) / m0
        met = t <= TARGET_TIME and m <= TARGET_MEMORY
        print(f"  {v:10s} {t:.2f}x wall time  {c:.2f}x cpu time  {m:.2f}x peak memory  "
              f"{'meets targets' if met else 'MISSES targets'}")
    print("loss and gradients match the explicit formula (allclose)" if ok else
          "NUMBERS DIFFER from the explicit formula")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
