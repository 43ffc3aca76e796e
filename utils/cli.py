"""The shared ending of train.py and eval.py: known problems become one `error:` line and exit 1,
Ctrl-C exits 130, and the process group is always torn down (every rank, barrier first)."""
from __future__ import annotations

import sys
from typing import Callable

from utils import dist


def run_main(work: Callable[[], object], errors: tuple[type[BaseException], ...],
             on_interrupt: str) -> int:
    try:
        work()
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted: {on_interrupt}", file=sys.stderr)
        return 130
    finally:
        dist.cleanup()
    return 0
