"""torch.distributed helpers: the same code runs single-process (CPU/GPU) and under torchrun."""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from utils.device import check_device


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def _attempt_store():
    """torchrun's store with this restart attempt's own key space, or None (plain env://).

    torchrun's c10d rendezvous hosts one TCPStore for every restart of a worker group, and
    env:// does not prefix the workers' keys per attempt, so a restarted gloo rank could read
    the dead group's addresses ("connectFullMesh failed", or a hang) when the new ranks start
    a few seconds apart. A prefix of TORCHELASTIC_RESTART_COUNT keeps each attempt apart."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or "MASTER_ADDR" not in os.environ:
        return None
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                          timeout=timedelta(minutes=30))
    return dist.PrefixStore(f"/cdsp/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def init_distributed(device_arg: str = "auto") -> torch.device:
    """Initialise the process group when launched by torchrun; return this process's device.

    torchrun sets WORLD_SIZE/RANK/LOCAL_RANK. NCCL on CUDA, gloo on CPU (what tests use here).
    `device_arg`: utils.device's --device rule (DeviceError for one this machine lacks).
    """
    device_arg = check_device(device_arg)
    want_cuda = device_arg.startswith("cuda") or (device_arg == "auto" and torch.cuda.is_available())
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not is_dist():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if want_cuda:
            torch.cuda.set_device(local_rank)
        backend = "nccl" if want_cuda else "gloo"
        store = _attempt_store()
        if store is None:
            dist.init_process_group(backend=backend)
        else:
            dist.init_process_group(backend=backend, store=store, rank=int(os.environ["RANK"]),
                                    world_size=int(os.environ["WORLD_SIZE"]))
    if want_cuda:
        index = device_arg.partition(":")[2] or os.environ.get("LOCAL_RANK", "0")
        return torch.device("cuda", int(index))
    return torch.device("mps" if device_arg == "mps" else "cpu")


def cleanup() -> None:
    """Tear the process group down on the success path only (utils.cli.run_main): every rank
    waits first, since with gloo a rank that leaves early makes the others abort at exit
    ("terminate called without an active exception"). A rank that failed must not call this."""
    if is_dist():
        barrier()
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- collectives
# Every collective of this repository is one of the functions below; a test
# (tests/test_dist.py) fails if any other module calls a torch.distributed collective.
#
# The device rule lives here and nowhere else: a backend takes tensors only on the device types
# it was created for. NCCL takes CUDA tensors alone (a CPU tensor is "No backend type associated
# with device type cpu"); gloo takes CPU (and CUDA) tensors. So each helper sends a copy on the
# group's device when the caller's tensor is not on one the group takes, and hands the result
# back on the caller's device. (The other route, a CPU backend beside NCCL via
# "cpu:gloo,cuda:nccl", was not taken: it needs gloo's TCP mesh on every node as well, which
# fails on clusters whose hostname resolves to a loopback address, for collectives that carry
# a few numbers.)
def comm_device(like: torch.device | None = None) -> torch.device:
    """Where a collective's tensors must live: `like` if the process group takes that device
    type, else the group's own device (this process's GPU for NCCL, the CPU for gloo)."""
    types = [d.type for d in dist.group.WORLD._device_types]
    if like is not None and like.type in types:
        return like
    if "cpu" in types or not types:
        return torch.device("cpu")
    kind = types[0]
    module = getattr(torch, kind, None)
    index = module.current_device() if hasattr(module, "current_device") else 0
    return torch.device(kind, index)


def _on_comm(t: torch.Tensor) -> torch.Tensor:
    dev = comm_device(t.device)
    return t if t.device == dev else t.to(dev)


def barrier() -> None:
    if not is_dist():
        return
    dev = comm_device()
    if dev.type == "cuda":  # NCCL's barrier on this process's own GPU (else it guesses)
        dist.barrier(device_ids=[dev.index])
    else:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` over all ranks, in place, on `t`'s own device; returns `t`."""
    if is_dist():
        x = _on_comm(t)
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        if x is not t:
            t.copy_(x)
    return t


def all_gather(t: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's `t` (same shape on every rank), rank order, on `t`'s own device."""
    if not is_dist():
        return [t]
    x = _on_comm(t)
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return [o.to(t.device) for o in out]


def all_gather_object(obj) -> list:
    """Every rank's value of a picklable object, rank order (torch sends it on the device the
    group takes, this process's GPU for NCCL)."""
    if not is_dist():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj):
    """Rank 0's value of a picklable object, on every rank."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=comm_device())
    return box[0]


class ShardSampler(Sampler):
    """Deterministic, non-padded split of a dataset over ranks (rank r takes r, r+W, ...).

    For evaluation: unlike DistributedSampler it never repeats an index, so every image is
    scored exactly once and the reduced confusion matrix counts each pixel once.
    """

    def __init__(self, n: int, rank_: int | None = None, world: int | None = None):
        self.n = n
        self.rank = rank() if rank_ is None else rank_
        self.world = world_size() if world is None else world

    def __iter__(self):
        return iter(range(self.rank, self.n, self.world))

    def __len__(self):
        return len(range(self.rank, self.n, self.world))
