"""A process-group backend that refuses CPU tensors, the way NCCL does, on a machine without a GPU.

NCCL's process group has a backend for CUDA tensors only: a CPU tensor in a collective is
"No backend type associated with device type cpu". gloo takes CPU tensors, so a test run with
gloo cannot see that class of bug. This module registers:

- `stubdev`: a stand-in accelerator (PyTorch's PrivateUse1 key, implemented in Python): a
  `StubTensor` carries an ordinary CPU tensor; every aten op on it runs on that CPU payload
  (one boxed fallback) and hands back StubTensors. `x.to(DEVICE)` and `.to("cpu")` move data.
- `stubnccl`: a c10d backend registered for the `stubdev` device type only, so the process
  group refuses CPU tensors with NCCL's own error; its collectives check every tensor is on
  `stubdev`, then run over an inner gloo group on the payloads (real communication between
  ranks).

    import nccl_stub                     # registers both (once per process)
    torch.distributed.init_process_group("stubnccl", init_method=..., rank=r, world_size=n)

Registration is per process and cannot be undone: use it in child processes.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch._C._distributed_c10d import Backend as _C10dBackend
from torch.utils._pytree import tree_leaves, tree_map
from torch.utils.backend_registration import _setup_privateuseone_for_python_backend

NAME, BACKEND = "stubdev", "stubnccl"
_setup_privateuseone_for_python_backend(NAME)
DEVICE = torch.device(NAME, 0)


class StubTensor(torch.Tensor):
    """A tensor on `stubdev` whose data is the CPU tensor `payload`."""

    __torch_function__ = torch._C._disabled_torch_function_impl  # results stay plain tensors

    @staticmethod
    def __new__(cls, payload: torch.Tensor):
        t = torch._C._acc.create_empty_tensor(payload.size(), payload.dtype)
        t.__class__ = cls
        t.payload = payload
        return t


def _cpu(v):
    if isinstance(v, StubTensor):
        return v.payload
    if isinstance(v, torch.device) and v.type == NAME:
        return torch.device("cpu")
    return v


def _fallback(op, *args, **kwargs):
    """Every aten op on stubdev: run it on the CPU payloads."""
    name = op._schema.name
    if name in ("aten::_copy_from", "aten::_copy_from_and_resize"):
        src, dst = args[0], args[1]
        target = dst.payload if isinstance(dst, StubTensor) else dst
        if name.endswith("resize"):
            target.resize_(src.shape)
        target.copy_(_cpu(src))
        return dst
    out = op(*tree_map(_cpu, args), **tree_map(_cpu, kwargs))
    for i, a in enumerate(op._schema.arguments):  # in-place and out= ops return their own argument
        if a.alias_info is not None and a.alias_info.is_write:
            return args[i] if i < len(args) else kwargs[a.name]
    device = kwargs.get("device")
    to_stub = device.type == NAME if isinstance(device, torch.device) else \
        any(isinstance(a, StubTensor) for a in tree_leaves((args, kwargs)))
    return tree_map(lambda v: StubTensor(v) if to_stub and isinstance(v, torch.Tensor) else v, out)


_LIB = torch.library.Library("_", "IMPL")
_LIB.fallback(_fallback, "PrivateUse1")


class _Done(dist._Work):
    def __init__(self, result=None):
        super().__init__()
        self.result = result

    def wait(self, timeout=None):
        return True

    def get_future(self):
        fut = torch.futures.Future()
        fut.set_result(self.result)
        return fut


class StubNCCL(_C10dBackend):
    """Refuses any tensor not on stubdev (NCCL: not on CUDA); communicates through gloo."""

    def __init__(self, store, rank: int, size: int, timeout):
        super().__init__(rank, size)
        self.inner = dist.ProcessGroupGloo(dist.PrefixStore("nccl_stub", store), rank, size, timeout)
        self.seen: list[str] = []

    def _payloads(self, tensors) -> list[torch.Tensor]:
        for t in tensors:
            if not isinstance(t, StubTensor):
                raise RuntimeError(f"{BACKEND}: a tensor on {t.device} (this backend takes {NAME} tensors only)")
        return [t.payload for t in tensors]

    def allreduce(self, tensors, opts):
        self.inner.allreduce(self._payloads(tensors), opts).wait()
        return _Done(tensors)

    def allgather(self, outputs, inputs, opts):
        self.inner.allgather([self._payloads(o) for o in outputs], self._payloads(inputs), opts).wait()
        return _Done(outputs)

    def broadcast(self, tensors, opts):
        self.inner.broadcast(self._payloads(tensors), opts).wait()
        return _Done(tensors)

    def barrier(self, opts):
        self.inner.barrier(opts).wait()
        return _Done()

    def getBackendName(self):
        return BACKEND


dist.Backend.register_backend(BACKEND, StubNCCL, devices=[NAME])
