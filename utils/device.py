"""--device, one rule for every tool that takes it (train.py, make_pseudo_labels.py, eval.py,
predict.py): `auto` (a GPU if there is one, else the CPU), `cpu`, `cuda` (under torchrun: the
process's LOCAL_RANK GPU), `cuda:N` (one process), `mps` (Apple GPUs, where torch has them).

The flag is checked when it is parsed (`device_flag`, an argparse type), so a device this
machine lacks is one `error: argument --device: ...` line before any folder is made or any
data read; utils.dist.init_distributed checks a value given in code the same way
(`check_device`, DeviceError).
"""
from __future__ import annotations

import argparse
import os
import re

import torch

DEVICE_HELP = "auto, cpu, cuda or cuda:N (under torchrun, cuda is LOCAL_RANK's GPU)"


class DeviceError(ValueError):
    """A --device this machine cannot use; the message names the value and the choices."""


def check_device(value: str) -> str:
    """`value` normalised ('auto', 'cpu', 'cuda', 'cuda:N', 'mps'); DeviceError otherwise."""
    v = str(value).strip().lower()
    if v in ("auto", "cpu"):
        return v
    if v == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise DeviceError(f"'{value}': no MPS device on this machine (use auto or cpu)")
        return v
    m = re.fullmatch(r"cuda(?::(\d+))?", v)
    if m is None:
        raise DeviceError(f"'{value}' is not a device; use {DEVICE_HELP}")
    if not torch.cuda.is_available():
        raise DeviceError(f"'{value}': CUDA is not available on this machine (use cpu or auto)")
    if m.group(1) is not None:
        n = torch.cuda.device_count()
        if int(m.group(1)) >= n:
            raise DeviceError(f"'{value}': this machine has {n} GPU(s), cuda:0..cuda:{n - 1}")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise DeviceError(f"'{value}': under torchrun each process uses its LOCAL_RANK's GPU; "
                              f"give cuda")
    return v


def device_flag(value: str) -> str:
    """argparse `type=` of --device: check_device, its error as argparse's one line."""
    try:
        return check_device(value)
    except DeviceError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
