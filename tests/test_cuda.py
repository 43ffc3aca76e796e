"""CUDA correctness (run by bench/gpu.py on a GPU machine; every test is skipped without CUDA):

- fp16 autocast + torch.amp.GradScaler training steps of a small DeepLab (+ LoRM, the full
  CDSP loss) stay finite and lower the loss on a fixed batch; bf16 autocast likewise;
- LoRM's foreground-rows attention (scaled_dot_product_attention on CUDA) == lorm_reference,
  loss and gradients, float32 and under fp16 autocast; which SDPA backends accept the
  2048-wide head, and which one the default dispatch ran, are recorded;
- train.py under torchrun trains an epoch on the GPU(s) (DDP + SyncBatchNorm over NCCL with two
  GPUs); NCCL, utils.training.distributed (SyncBatchNorm + DDP, also on a batch without
  foreground), SyncBatchNorm's sync kernels, every utils.dist collective (CPU and CUDA
  tensors), check_weights_in_sync, the label summary and the confusion-matrix reduction work
  in a one-rank NCCL group;
- batched sliding-window inference (--crop_batch default) == one window at a time (1).

    python -m pytest -m cuda tests/test_cuda.py

With CDSP_CUDA_RECORD=FILE set, the measured facts (SDPA backends, label agreement, ranks)
are written there as JSON (bench/gpu.py puts them into gpu.json).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import warnings

import pytest
import torch

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_RECORD: dict = {}


@pytest.fixture(scope="module")
def record():
    """A dict of facts to report; written to $CDSP_CUDA_RECORD after the module's tests."""
    yield _RECORD
    path = os.environ.get("CDSP_CUDA_RECORD")
    if path and _RECORD:
        with open(path, "w") as f:
            json.dump(_RECORD, f, indent=1, default=str)


@contextlib.contextmanager
def no_tf32():
    """float32 matmuls and convolutions in full float32 (TF32 would differ from the oracle by
    ~1e-3 relative); restores the previous settings."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# ----------------------------------------------------------------------------- AMP training steps
def fixed_batch(device, batch: int = 4, crop: int = 97) -> dict:
    """A learnable batch: the label is a function of the image (class 1 + sign pattern of two
    channels), pseudo-label with about half foreground, distance maps in 0..255."""
    g = torch.Generator().manual_seed(0)
    image = torch.randn(batch, 3, crop, crop, generator=g)
    image = torch.nn.functional.avg_pool2d(image, 9, 1, 4) * 3  # smooth regions
    label = 1 + (image[:, 0] > 0).long() + 2 * (image[:, 1] > 0).long()
    label[image[:, 2] > 0.3] = 0  # background
    scribble = torch.full_like(label, 255)
    scribble[:, ::4, ::4] = label[:, ::4, ::4]
    return {"image": image.to(device), "scribble": scribble.to(device), "pseudo": label.to(device),
            "dist_s": (torch.rand(batch, crop, crop, generator=g) * 255).to(device),
            "dist_c": (torch.rand(batch, crop, crop, generator=g) * 255).to(device)}


def train_losses(device, amp_dtype, steps: int = 20, layers: int = 18) -> tuple[list[float], float]:
    """Total losses of `steps` utils.engine.train_step calls (train.SegmentationTask, the CDSP
    loss with LoRM) on one fixed batch, and the GradScaler's final scale (1 when disabled)."""
    from losses import CDSPLoss
    from models import build_model
    from train import SegmentationTask
    from utils.engine import train_step

    torch.manual_seed(0)
    model = build_model("deeplabv2", layers, 21, lorm=True, pretrained=None).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    task = SegmentationTask(model, opt, device, amp_dtype, CDSPLoss())
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    batch = fixed_batch(device)
    losses = [train_step(task, scaler, batch)[0]["total"] for _ in range(steps)]
    for p in model.parameters():
        assert torch.isfinite(p).all()
    return losses, float(scaler.get_scale()) if scaler.is_enabled() else 1.0


def _check_lowers(losses: list[float]) -> None:
    assert all(math.isfinite(v) for v in losses), losses
    assert sum(losses[-3:]) / 3 < 0.9 * losses[0], losses


def test_fp16_autocast_gradscaler_steps_are_finite_and_lower_the_loss(record):
    losses, scale = train_losses(torch.device("cuda"), torch.float16)
    record["fp16_losses"] = [round(v, 4) for v in losses]
    record["fp16_final_grad_scale"] = scale
    _check_lowers(losses)
    assert scale > 0


def test_bf16_autocast_steps_are_finite_and_lower_the_loss(record):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    losses, _ = train_losses(torch.device("cuda"), torch.bfloat16)
    record["bf16_losses"] = [round(v, 4) for v in losses]
    _check_lowers(losses)


# ----------------------------------------------------------------------------- LoRM attention on CUDA
SDPA_BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH")


def _lorm_case(channels: int = 2048, size: int = 33, batch: int = 3):
    from models.lorm import LoRM
    torch.manual_seed(0)
    m = LoRM(channels).to("cuda")
    with torch.no_grad():  # non-trivial biases and gamma, so their gradients are exercised
        m.query_conv.bias.normal_(0, 0.5)
        m.key_conv.bias.normal_(0, 0.5)
        m.gamma.fill_(0.7)
    x = torch.randn(batch, channels, size, size, device="cuda")
    fg = torch.rand(batch, size, size, device="cuda") < 0.5
    fg[1] = True            # an image that is all foreground
    fg[2] = False
    fg[2, 3, 4] = True      # a single foreground position
    return m, x, fg


def _loss_and_grads(m, rectify, x0, fg, dtype=None):
    from losses.lorm import lorm_loss
    m.zero_grad(set_to_none=True)
    x = x0.clone().requires_grad_(True)
    amp = torch.autocast("cuda", dtype=dtype) if dtype else contextlib.nullcontext()
    with amp:
        x_rect = rectify(x, fg)
    loss = lorm_loss(x, x_rect.float())
    loss.backward()
    return {"loss": loss.detach(), "x": x.grad, **{n: p.grad for n, p in m.named_parameters()}}


def _rel_errs(got: dict, ref: dict) -> dict:
    """max |got - ref| / max |ref| of the loss and each gradient."""
    return {k: float((got[k].float() - ref[k].float()).abs().max() / ref[k].float().abs().max().clamp_min(1e-30))
            for k in ref}


def _close(got: dict, ref: dict, ref16: dict | None = None) -> tuple[bool, float]:
    """(close, worst error) of got vs the float32 oracle `ref`: within 1e-4 in float32; under
    fp16 autocast (`ref16`: the oracle's own errors under it) no worse than twice the oracle's
    own fp16 error (+1e-3): fp16 rounding of q, k (C=2048 dot products) dominates both."""
    err = _rel_errs(got, ref)
    if ref16 is None:
        return max(err.values()) < 1e-4, max(err.values())
    return all(err[k] <= 2 * ref16[k] + 1e-3 for k in err), max(err.values())


def _ran_backend(fn) -> list[str]:
    """The aten ops scaled_dot_product_attention dispatched to while fn ran (forward and
    backward), e.g. aten::_scaled_dot_product_efficient_attention: that names the backend."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sorted({e.key for e in prof.key_averages()
                   if "scaled_dot_product" in e.key and e.key != "aten::scaled_dot_product_attention"})


def test_lorm_fused_attention_equals_reference_and_sdpa_backends(record):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    m, x, fg = _lorm_case()
    assert m.fused is None  # the device default: fused on CUDA
    with no_tf32():
        ref = _loss_and_grads(m, m.forward_reference, x, fg)
        oracle16 = {None: None,  # the explicit formula's own error under fp16 autocast
                    torch.float16: _rel_errs(_loss_and_grads(m, m.forward_reference, x, fg, torch.float16), ref)}
        ok, err = _close(_loss_and_grads(m, m.forward, x, fg), ref)
        record["lorm_fused_vs_reference_fp32_max_rel_err"] = err
        assert ok, err
        ok, err = _close(_loss_and_grads(m, m.forward, x, fg, torch.float16), ref, oracle16[torch.float16])
        record["lorm_fused_vs_reference_fp16_autocast_max_rel_err"] = err
        record["lorm_reference_fp16_autocast_max_rel_err"] = max(oracle16[torch.float16].values())
        assert ok, err

        backends = {}
        for name in SDPA_BACKENDS:
            backend = getattr(SDPBackend, name, None)
            if backend is None:
                backends[name] = {"fp32": "not in this torch", "fp16": "not in this torch"}
                continue
            backends[name] = {}
            for label, dtype in (("fp32", None), ("fp16", torch.float16)):
                try:
                    with sdpa_kernel([backend]), warnings.catch_warnings(record=True) as why:
                        warnings.simplefilter("always")
                        out = _loss_and_grads(m, m.forward, x, fg, dtype)
                except RuntimeError as e:  # "No available kernel": this backend refuses the head
                    reasons = "; ".join(dict.fromkeys(str(w.message).strip()[:200] for w in why))
                    backends[name][label] = ("unsupported: " + str(e).strip().splitlines()[0][:200]
                                             + (f" [{reasons}]" if reasons else ""))
                    continue
                ok, e_rel = _close(out, ref, oracle16[dtype])
                backends[name][label] = f"ok (max rel err {e_rel:.1e})"
                assert ok, (name, label, e_rel)
        record["sdpa_backends_2048_head"] = backends
        record["sdpa_default_ran"] = {
            "fp32": _ran_backend(lambda: _loss_and_grads(m, m.forward, x, fg)),
            "fp16": _ran_backend(lambda: _loss_and_grads(m, m.forward, x, fg, torch.float16))}
    assert any(v["fp32"].startswith("ok") for v in backends.values())


# ----------------------------------------------------------------------------- DDP / NCCL / SyncBN
def test_train_py_under_torchrun_trains_an_epoch_on_cuda(make_synthetic, tmp_path, record):
    from conftest import torchrun
    nproc = min(2, torch.cuda.device_count())
    record["torchrun_train_nproc"] = nproc
    if nproc < 2:
        record["torchrun_train_note"] = ("one GPU: torchrun --nproc_per_node 1 sets WORLD_SIZE=1, so "
                                         "train.py runs without a process group (no DDP, no "
                                         "SyncBatchNorm); test_syncbn_nccl_one_rank covers NCCL")
    root = make_synthetic()
    log = tmp_path / "log"
    proc, seconds = torchrun("train.py", [
        "--dataset_path", str(root), "--logdir", str(log), "--layers", "18", "--pretrained", "none",
        "--batchsize", "2", "--crop_size", "65", "--workers", "0", "--lr", "0.01", "--warmup", "1",
        "--pseudo_path", "pseudo_label", "--epochs", "1", "--device", "cuda"], nproc=nproc, timeout=240)
    record["torchrun_train_seconds"] = round(seconds, 1)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (log / "last_checkpoint.pth").is_file()
    config = json.loads((log / "config.json").read_text()) if (log / "config.json").is_file() else {}
    if config:
        assert str(config.get("device", "cuda")).startswith("cuda"), config.get("device")
    if nproc >= 2:
        assert f"weights identical on all {nproc} ranks" in proc.stdout


def test_syncbn_nccl_one_rank(record):
    """A one-rank NCCL group (torchrun): utils.training.distributed's SyncBatchNorm + DDP model
    takes fp16 training steps, also on a batch without any foreground (LoRM's projections must
    still get a gradient, or DDP fails at the next step); SyncBatchNorm's sync kernels (stats,
    NCCL all_gather, gather, backward all_reduce) equal plain batch norm; and every utils.dist
    collective, check_weights_in_sync, make_pseudo_labels' label summary and the confusion-matrix
    reduction work with NCCL, which refuses CPU tensors (gloo accepts them: the CPU suite cannot
    see this)."""
    from conftest import torchrun
    proc, _ = torchrun(os.path.abspath(__file__), ["--nccl-child"], nproc=1, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    record["syncbn_nccl_one_rank"] = result
    assert result["sync_batchnorm_modules"] > 0
    assert result["bn_max_abs_diff"] < 1e-4 and result["bn_grad_max_abs_diff"] < 1e-4, result
    assert len(result["losses_no_foreground"]) == 3 and all(map(math.isfinite, result["losses_no_foreground"]))
    assert "No backend type associated with device type cpu" in result["raw_cpu_all_reduce"], result
    assert result["helpers"] == {"all_reduce_sum": [2.0, 3.0], "all_reduce_sum_cuda": [5.0],
                                 "all_gather": [[1, 2]], "broadcast": {"a": [1, 2]},
                                 "all_gather_object": [{"r": 0}],
                                 "label_summary": {"labelled": 2, "unsure_fraction": 0.25},
                                 "confusion": [[1, 0], [1, 1]], "weights_in_sync": "ok"}, result


def _nccl_child() -> None:
    """Run by test_syncbn_nccl_one_rank under torchrun: prints one JSON line."""
    sys.path.insert(0, REPO)
    import torch.distributed as tdist
    import torch.nn.functional as F
    from torch.nn.modules._functions import SyncBatchNorm as SyncBNFunction

    from losses import CDSPLoss
    from models import build_model
    from train import SegmentationTask
    from utils.engine import train_step
    from utils.training import distributed

    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    device = torch.device("cuda", torch.cuda.current_device())
    tdist.init_process_group("nccl", init_method="env://")
    torch.manual_seed(0)
    model = distributed(build_model("deeplabv2", 18, 21, lorm=True, pretrained=None).to(device), device)
    n_sync = sum(isinstance(mod, torch.nn.SyncBatchNorm) for mod in model.modules())
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    task = SegmentationTask(model, opt, device, torch.float16, CDSPLoss())
    scaler = torch.amp.GradScaler("cuda")
    batch = fixed_batch(device, batch=2, crop=65)
    losses = [train_step(task, scaler, batch)[0]["total"] for _ in range(3)]
    no_fg = batch | {"pseudo": torch.zeros_like(batch["pseudo"])}  # LoRM's mask empty everywhere
    losses_no_fg = [train_step(task, scaler, no_fg)[0]["total"] for _ in range(3)]

    # Every collective helper with CPU and CUDA tensors; the raw CPU call shows NCCL refusing.
    from stage1.labeller import label_summary
    from utils import dist
    from utils.metrics import ConfusionMeter
    from utils.training import check_weights_in_sync
    try:
        tdist.all_reduce(torch.ones(1))
        raw_cpu = "accepted"
    except RuntimeError as e:
        raw_cpu = str(e)
    meter = ConfusionMeter(2)  # on the CPU
    meter.update(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]))
    dist.barrier()
    check_weights_in_sync(model)
    helpers = {"all_reduce_sum": dist.all_reduce_sum(torch.tensor([2.0, 3.0])).tolist(),
               "all_reduce_sum_cuda": dist.all_reduce_sum(torch.tensor([5.0], device=device)).tolist(),
               "all_gather": [t.tolist() for t in dist.all_gather(torch.tensor([1, 2]))],
               "broadcast": dist.broadcast_object({"a": [1, 2]}),
               "all_gather_object": dist.all_gather_object({"r": 0}),
               "label_summary": label_summary(torch.tensor([8.0, 2.0, 2.0], dtype=torch.float64)),
               "confusion": meter.all_reduce().conf.tolist(), "weights_in_sync": "ok"}

    # With one rank SyncBatchNorm.forward falls back to F.batch_norm; call its sync path itself.
    x = torch.randn(4, 8, 5, 5, device=device, requires_grad=True)
    w = torch.rand(8, device=device, requires_grad=True)
    b = torch.randn(8, device=device, requires_grad=True)
    rm, rv = torch.zeros(8, device=device), torch.ones(8, device=device)
    y = SyncBNFunction.apply(x, w, b, rm, rv, 1e-5, 0.1, tdist.group.WORLD, 1)
    (y * torch.arange(8, device=device).view(1, 8, 1, 1)).sum().backward()
    gx = x.grad.clone()
    x.grad = None
    y_ref = F.batch_norm(x, torch.zeros(8, device=device), torch.ones(8, device=device), w, b, True, 0.1, 1e-5)
    (y_ref * torch.arange(8, device=device).view(1, 8, 1, 1)).sum().backward()
    nccl = torch.cuda.nccl.version()  # a tuple in recent torch, an int in old ones
    print(json.dumps({"sync_batchnorm_modules": n_sync, "ddp": type(model).__name__, "losses": losses,
                      "losses_no_foreground": losses_no_fg, "raw_cpu_all_reduce": raw_cpu, "helpers": helpers,
                      "nccl_version": ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl),
                      "bn_max_abs_diff": float((y - y_ref).abs().max()),
                      "bn_grad_max_abs_diff": float((gx - x.grad).abs().max())}), flush=True)
    dist.cleanup()


# ----------------------------------------------------------------------------- inference
def test_batched_inference_equals_one_window_at_a_time(record):
    """eval.py's model (BN folded, channels-last), the paper's 7 scales on a 375x500 image:
    --crop_batch 8 (default) and 1 give the same labels (float32 without TF32: wherever the top
    two probabilities are not a rounding tie; under fp16 autocast: >= 99.9 % of pixels)."""
    import copy
    from types import SimpleNamespace

    from bench.eval import make_model
    from datasets.synthetic import sample
    from eval import predict
    from utils.inference import prepare_for_inference

    model = prepare_for_inference(copy.deepcopy(make_model(SimpleNamespace(
        checkpoint=None, model_type="deeplabv2", layers=18)))).to("cuda")
    image = sample("val", 0, size=(375, 500), seed=0)["image"]
    agreement = {}
    with no_tf32():
        for amp in (False, True):
            one = predict(model, image, crop_batch=1, amp=amp).float()
            many = predict(model, image, amp=amp).float()  # the default crop_batch
            top2 = one.topk(2, dim=0).values
            clear = (top2[0] - top2[1]) > (1e-4 if not amp else 1e-2)
            same = one.argmax(0) == many.argmax(0)
            key = "amp_fp16" if amp else "fp32"
            agreement[key] = {"labels_equal_pct": 100 * float(same.float().mean()),
                              "max_abs_prob_diff": float((one - many).abs().max())}
            if amp:
                assert float(same.float().mean()) >= 0.999, agreement
            else:
                assert bool((same | ~clear).all()), agreement
    record["batched_vs_one_window"] = agreement


if __name__ == "__main__" and "--nccl-child" in sys.argv:
    _nccl_child()
