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
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if is_dist():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj):
    """Rank 0's value of a picklable object, on every rank."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
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
