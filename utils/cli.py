"""The shared ending of train.py, eval.py and make_pseudo_labels.py: known problems (those the
script names, and an output that cannot be written) become one `error:` line and exit 1,
Ctrl-C exits 130, running out of memory is one line too.

Under torchrun a rank that fails must never wait for the others (they may be blocked in a
collective that will never complete, and the job would hang until killed): it says what
happened and leaves at once, with its exit code; torchrun then stops the other ranks. Only a
rank that succeeded tears the process group down behind a barrier (with gloo, a rank that
leaves early makes the others abort at exit).
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from typing import Callable

import torch

from utils import dist
from utils.io import OutputError

OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
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


def run_main(work: Callable[[], object], errors: tuple[type[BaseException], ...],
             on_interrupt: str) -> int:
    try:
        work()
    except (OutputError, *errors) as e:  # every script can meet an output it cannot write
        return _fail(f"error: {error_message(e)}", 1)
    except OUT_OF_MEMORY as e:
        first = str(e).splitlines()[0] if str(e) else ""
        return _fail(f"error: out of memory ({first}); lower --batchsize or --crop_size", 1)
    except KeyboardInterrupt:
        return _fail(f"interrupted: {on_interrupt}", 130)
    except BaseException:
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
