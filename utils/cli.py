"""The shared ending of train.py, eval.py, predict.py and make_pseudo_labels.py: known problems
(those the script names, and an output that cannot be written) become one `error:` line and
exit 1, Ctrl-C exits 130, running out of memory is one line too: from torch on a GPU or a CPU,
numpy or OpenCV, naming what was being worked on (`naming_out_of_memory`, e.g. an image) and
the settings to lower (the script's `memory_hint`).

Under torchrun a rank that fails must never wait for the others (they may be blocked in a
collective that will never complete, and the job would hang until killed): it says what
happened and leaves at once, with its exit code; torchrun then stops the other ranks. Only a
rank that succeeded tears the process group down behind a barrier (with gloo, a rank that
leaves early makes the others abort at exit).
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import time
import traceback
from typing import Callable

import torch

from utils import dist
from utils.io import OutputError

OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
# What the CPU allocators say: torch raises a RuntimeError (its allocator, or C++'s bad_alloc),
# OpenCV a cv2.error (numpy: MemoryError).
CPU_OUT_OF_MEMORY = ("DefaultCPUAllocator: can't allocate memory", "(-4:Insufficient memory)", "std::bad_alloc")
# A rank other than 0 waits this long before reporting: when every rank fails alike (a bad
# flag, a missing file), rank 0 has reported and torchrun has stopped the rest by then, so the
# message appears once; when only this rank failed, its message follows.
SECOND_RANK_GRACE_S = 3.0


def error_message(e: BaseException) -> str:
    """The problem as its raiser worded it.

    An error raised in a DataLoader worker comes back re-raised by torch with the worker's
    whole traceback as its message ("Caught DatasetError in DataLoader worker process 0.
    Original Traceback ..."); its last line holds the original message, which is what a user
    needs (the file and the problem), not torch's internals.
    """
    text = str(e)
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        name = type(e).__name__
        for prefix in (f"{type(e).__module__}.{name}: ", f"{name}: "):
            if last.startswith(prefix):
                return last[len(prefix):]
    return text


class OutOfMemory(Exception):
    """Out of memory while working on `where` (raised by naming_out_of_memory)."""

    def __init__(self, where: str, cause: BaseException):
        super().__init__(f"{where}: {error_message(cause)}")
        self.where, self.cause = where, cause


def is_out_of_memory(e: BaseException) -> bool:
    """e says that an allocation failed: torch (GPU or CPU), numpy, OpenCV; also when raised in a
    DataLoader worker (torch re-raises it with the worker's traceback as its message)."""
    if isinstance(e, (OUT_OF_MEMORY, MemoryError, OutOfMemory)):
        return True
    return ((isinstance(e, RuntimeError) or type(e).__module__ == "cv2")
            and any(m in str(e) for m in CPU_OUT_OF_MEMORY))


@contextlib.contextmanager
def naming_out_of_memory(where: str):
    """Running out of memory inside the block becomes OutOfMemory naming `where` (e.g. "image
    2007_000033"), which run_main reports in one line."""
    try:
        yield
    except Exception as e:
        if is_out_of_memory(e) and not isinstance(e, OutOfMemory):
            raise OutOfMemory(where, e) from None  # not chained: the failed frames' memory goes
        raise


def out_of_memory_line(e: BaseException, hint: str) -> str:
    """`error: out of memory on WHERE (could not allocate N GiB); HINT` (the allocator's first
    line when it names no amount)."""
    where = f" on {e.where}" if isinstance(e, OutOfMemory) else ""
    text = error_message(e.cause if isinstance(e, OutOfMemory) else e)
    count = re.search(r"allocate (\d+) bytes", text)  # torch's CPU allocator, OpenCV
    amount = re.search(r"allocate ([\d.]+ [KMGTPE]i?B)", text)  # torch's CUDA allocator, numpy
    if count:
        n, unit = int(count.group(1)), "B"
        for bigger in ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
            if n < 1024:
                break
            n, unit = n / 1024, bigger
        cause = f"could not allocate {n:.2f} {unit}"
    elif amount:
        cause = f"could not allocate {amount.group(1)}"
    else:
        cause = text.splitlines()[0] if text else type(e).__name__
    return f"error: out of memory{where} ({cause}); {hint}"


def run_main(work: Callable[[], object], errors: tuple[type[BaseException], ...],
             on_interrupt: str, memory_hint: str = "lower --batchsize or --crop_size") -> int:
    try:
        work()
    except (OutputError, *errors) as e:  # every script can meet an output it cannot write
        return _fail(f"error: {error_message(e)}", 1)
    except KeyboardInterrupt:
        return _fail(f"interrupted: {on_interrupt}", 130)
    except BaseException as e:
        if is_out_of_memory(e):
            return _fail(out_of_memory_line(e, memory_hint), 1)
        if not dist.is_dist():
            raise
        return _fail(traceback.format_exc().rstrip(), 1)  # an unexpected error: its traceback
    dist.cleanup()  # success only: every rank that gets here meets the others at the barrier
    return 0


def _fail(message: str, code: int) -> int:
    """Report a failure; under torchrun, leave now without touching the process group."""
    if not dist.is_dist():
        print(message, file=sys.stderr)
        return code
    if not dist.is_main():
        time.sleep(SECOND_RANK_GRACE_S)
    prefix = f"[rank {dist.rank()}] " if dist.world_size() > 1 else ""
    print(prefix + message, file=sys.stderr, flush=True)
    sys.stdout.flush()
    # No barrier, no destroy_process_group (either can block on the ranks still running), no
    # interpreter teardown (DataLoader workers and gloo threads can block it): exit right here.
    os._exit(code)
