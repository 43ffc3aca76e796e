"""The shared ending of train.py, eval.py and make_pseudo_labels.py: known problems become one
`error:` line and exit 1, Ctrl-C exits 130, and the process group is always torn down (every
rank, barrier first)."""
from __future__ import annotations

import sys
from typing import Callable

from utils import dist


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
    except errors as e:
        print(f"error: {error_message(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted: {on_interrupt}", file=sys.stderr)
        return 130
    finally:
        dist.cleanup()
    return 0
