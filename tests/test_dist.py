"""Multi-GPU paths without a GPU (issue 22): the collectives' device rule, checked under a backend
that refuses CPU tensors as NCCL does (tests/nccl_stub.py), and a two-rank run in which one rank
sees no foreground for a whole epoch.

gloo takes CPU tensors, so a gloo test alone cannot see a CPU tensor handed to an NCCL collective;
the stub backend can. Every collective goes through utils/dist (a test below fails otherwise),
which is where the device rule lives.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess

import numpy as np
import torch
import torch.multiprocessing as mp

from conftest import torchrun

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))

# torch.distributed's collectives (and point-to-point calls): only utils/dist.py may call them.
COLLECTIVES = {"all_reduce", "all_gather", "all_gather_object", "all_gather_into_tensor", "all_to_all",
               "all_to_all_single", "broadcast", "broadcast_object_list", "reduce", "reduce_scatter",
               "reduce_scatter_tensor", "gather", "gather_object", "scatter", "scatter_object_list",
               "barrier", "monitored_barrier", "send", "recv", "isend", "irecv", "batch_isend_irecv"}


def direct_collectives(source: str) -> list[str]:
    """`name:line` of every torch.distributed collective called, or imported by name, in `source`."""
    tree = ast.parse(source)
    aliases = set()          # local names bound to the torch.distributed module
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "torch.distributed" and a.asname:
                    aliases.add(a.asname)
        elif isinstance(node, ast.ImportFrom):
            if node.module == "torch":
                aliases.update(a.asname or a.name for a in node.names if a.name == "distributed")
            if node.module == "torch.distributed":
                found += [f"{a.name}:{node.lineno}" for a in node.names if a.name in COLLECTIVES]

    def is_dist_module(expr) -> bool:
        if isinstance(expr, ast.Name):
            return expr.id in aliases
        return (isinstance(expr, ast.Attribute) and expr.attr == "distributed"
                and isinstance(expr.value, ast.Name) and expr.value.id == "torch")

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in COLLECTIVES and is_dist_module(node.value):
            found.append(f"{node.attr}:{node.lineno}")
    return found


def test_the_scanner_sees_every_spelling():
    src = ("import torch\nimport torch.distributed as d\nfrom torch import distributed as td\n"
           "from torch.distributed import broadcast\n"
           "torch.distributed.all_gather(a, b)\nd.all_reduce(x)\ntd.barrier()\nf = d.broadcast_object_list\n")
    assert sorted(direct_collectives(src)) == sorted(["broadcast:4", "all_gather:5", "all_reduce:6", "barrier:7",
                                                      "broadcast_object_list:8"])
    assert direct_collectives("from utils import dist\ndist.all_reduce_sum(x)\ndist.barrier()\n") == []


def test_no_module_outside_utils_dist_calls_a_collective():
    """Every collective must put its tensors where the backend takes them: one place does that."""
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    files += [f for f in subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "*.py"], cwd=REPO,
                                        capture_output=True, text=True, check=True).stdout.split()]
    offenders = {}
    for rel in files:
        if rel == "utils/dist.py" or rel.startswith("tests/"):
            continue
        path = os.path.join(REPO, rel)
        if os.path.isfile(path):
            hits = direct_collectives(open(path, encoding="utf-8").read())
            if hits:
                offenders[rel] = hits
    assert offenders == {}, f"call utils.dist helpers instead: {offenders}"


# ----------------------------------------------------------------------------- helpers under the stub
def _ranks(fn, world: int, tmp_path, *args) -> list[dict]:
    """Run fn(rank, world, *args) in `world` processes of a stub-NCCL group; their JSON results."""
    outs = [str(tmp_path / f"rank{r}.json") for r in range(world)]
    # spawn, not fork: a fork of the test process (which has run OpenMP work) can hang in torch
    mp.start_processes(_child, args=(fn, world, str(tmp_path / "init"), outs, args), nprocs=world,
                       join=True, start_method="spawn")
    return [json.load(open(o)) for o in outs]


def _child(rank, fn, world, init, outs, args):
    import sys
    sys.path.insert(0, TESTS)
    import nccl_stub  # noqa: F401  (registers the stub device and backend in this process)
    import torch.distributed as tdist
    tdist.init_process_group(nccl_stub.BACKEND, init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        result = fn(rank, world, *args)
    finally:
        tdist.destroy_process_group()
    with open(outs[rank], "w") as f:
        json.dump(result, f)


def _helpers(rank, world, root):
    import torch.distributed as tdist

    from datasets.score_labels import score_labels
    from stage1.labeller import label_summary
    from utils import dist
    from utils.metrics import ConfusionMeter
    from utils.training import TrainingError, check_weights_in_sync

    out = {"comm_device": str(dist.comm_device(torch.device("cpu")))}
    try:  # the stub behaves as NCCL: a CPU tensor in a raw collective is refused
        tdist.all_reduce(torch.ones(1))
        out["raw_cpu"] = "accepted"
    except RuntimeError as e:
        out["raw_cpu"] = str(e)
    t = torch.tensor([rank + 1.0, 10.0])
    dist.all_reduce_sum(t)
    out["all_reduce_sum"], out["all_reduce_device"] = t.tolist(), str(t.device)
    gathered = dist.all_gather(torch.tensor([rank, 7 * rank]))
    out["all_gather"], out["all_gather_device"] = [g.tolist() for g in gathered], str(gathered[0].device)
    out["broadcast"] = dist.broadcast_object({"from": rank, "ids": [3, 1, 2]})
    out["all_gather_object"] = dist.all_gather_object({"rank": rank})
    dist.barrier()

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    check_weights_in_sync(model)  # identical weights: passes (and prints on rank 0)
    with torch.no_grad():
        model[0].bias[0] += rank  # rank 1 drifts
    try:
        check_weights_in_sync(model)
        out["drift"] = "not seen"
    except TrainingError as e:
        out["drift"] = str(e)

    stats = torch.tensor([100.0 * (rank + 1), 10.0, 1.0 + rank], dtype=torch.float64)
    out["label_summary"] = label_summary(stats)

    meter = ConfusionMeter(3)  # on the CPU, as eval.py's is on a CPU run
    meter.update(torch.tensor([0, 1, 2, rank]), torch.tensor([0, 1, 1, 2]))
    out["confusion"] = meter.all_reduce().conf.tolist()

    scored = score_labels(root, "pseudo_label", "train", sharded=True)
    out["scores_sharded"] = {"images": scored["images"], "confusion": scored["confusion"]}
    return out


def test_every_helper_under_a_backend_that_refuses_cpu_tensors(synthetic_root, tmp_path):
    from datasets.score_labels import score_labels
    results = _ranks(_helpers, 2, tmp_path, str(synthetic_root))
    whole = score_labels(str(synthetic_root), "pseudo_label", "train")
    for rank, r in enumerate(results):
        assert "No backend type associated with device type cpu" in r["raw_cpu"], r
        assert r["comm_device"].startswith("stubdev"), r
        assert r["all_reduce_sum"] == [3.0, 20.0] and r["all_reduce_device"] == "cpu"
        assert r["all_gather"] == [[0, 0], [1, 7]] and r["all_gather_device"] == "cpu"
        assert r["broadcast"] == {"from": 0, "ids": [3, 1, 2]}
        assert r["all_gather_object"] == [{"rank": 0}, {"rank": 1}]
        assert "weights differ across ranks" in r["drift"], r
        assert r["label_summary"] == {"labelled": 3, "unsure_fraction": 20.0 / 300.0}
        expect = np.zeros((3, 3), int)
        for r_ in range(2):  # both ranks' (prediction, truth) pairs
            for p, t in zip([0, 1, 2, r_], [0, 1, 1, 2]):
                expect[t, p] += 1
        assert r["confusion"] == expect.tolist()
        assert r["scores_sharded"] == {"images": whole["images"], "confusion": whole["confusion"]}


def test_helpers_are_plain_without_a_process_group():
    from utils import dist
    t = torch.tensor([2.0])
    assert dist.all_reduce_sum(t) is t and t.item() == 2.0
    assert [g.tolist() for g in dist.all_gather(torch.tensor([1, 2]))] == [[1, 2]]
    assert dist.broadcast_object({"a": 1}) == {"a": 1}
    assert dist.all_gather_object({"a": 1}) == [{"a": 1}]
    dist.barrier()


# ----------------------------------------------------------------------------- a rank without foreground
def test_two_ranks_one_of_which_sees_only_background_for_an_epoch(make_synthetic, tmp_path):
    """LoRM gives its projections no gradient when a batch has no foreground unless they stay in
    the graph; DDP (find_unused_parameters=False) then fails on that rank's next step."""
    from PIL import Image
    from torch.utils.data import DistributedSampler
    root = make_synthetic(train=8)
    ids = [i.strip() for i in open(root / "ImageSets" / "SegmentationAug" / "train.txt") if i.strip()]
    seed = 1000
    # rank 1's ids in epoch 0, as utils.training.shuffled_loader's sampler deals them
    sampler = DistributedSampler(range(len(ids)), num_replicas=2, rank=1, shuffle=True, seed=seed, drop_last=True)
    sampler.set_epoch(0)
    rank1 = [ids[i] for i in sampler]
    assert len(rank1) == 4  # two steps of 2: the failure shows at the second
    for id_ in rank1:
        path = root / "pseudo_label" / f"{id_}.png"
        with Image.open(path) as im:
            blank = Image.new(im.mode, im.size, 0)
            if im.mode == "P":
                blank.putpalette(im.getpalette())
        blank.save(path)
    log = tmp_path / "log"
    proc, _ = torchrun("train.py", ["--dataset_path", str(root), "--logdir", str(log), "--layers", "18",
                                    "--pretrained", "none", "--batchsize", "2", "--crop_size", "65",
                                    "--workers", "0", "--lr", "0.01", "--warmup", "1", "--seed", str(seed),
                                    "--pseudo_path", "pseudo_label", "--epochs", "1", "--device", "cpu",
                                    "--val_interval", "1"], timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "weights identical on all 2 ranks" in proc.stdout
    assert torch.load(log / "last_checkpoint.pth", weights_only=False)["iteration"] == 2


def test_lorm_without_foreground_keeps_every_parameter_in_the_graph_with_zero_gradient():
    from losses.lorm import lorm_loss
    from models.lorm import LoRM
    torch.manual_seed(0)
    m = LoRM(16)
    x = torch.randn(2, 16, 5, 5, requires_grad=True)
    lorm_loss(x, m(x, torch.zeros(2, 5, 5, dtype=torch.bool))).backward()
    grads = {n: p.grad for n, p in m.named_parameters()}
    assert all(g is not None for g in grads.values()), grads
    assert all(float(g.abs().max()) == 0.0 for g in grads.values())
    # ... and x' = 0, so the loss is sum(x^2) / count, its gradient 2x / count
    assert torch.allclose(x.grad, 2 * x.detach() / x.numel())


def test_lorm_loss_and_gradients_with_foreground_equal_the_explicit_formula():
    """The no-foreground change leaves every case with foreground alone: the same loss and
    gradients as the authors' explicit (B, hw, hw) formula, whose code did not change."""
    from losses.lorm import lorm_loss
    from models.lorm import LoRM
    torch.manual_seed(1)
    m = LoRM(8).double()
    x0 = torch.randn(3, 8, 6, 7, dtype=torch.float64)
    fg = torch.rand(3, 6, 7) < 0.4
    fg[1] = False  # one image of the batch without foreground
    got, ref = {}, {}
    for out, fn in ((got, m.forward), (ref, m.forward_reference)):
        m.zero_grad(set_to_none=True)
        x = x0.clone().requires_grad_(True)
        loss = lorm_loss(x, fn(x, fg))
        loss.backward()
        out.update(loss=loss.detach(), x=x.grad, **{n: p.grad.clone() for n, p in m.named_parameters()})
    for k in ref:
        assert torch.allclose(got[k], ref[k], rtol=1e-10, atol=1e-12), k
