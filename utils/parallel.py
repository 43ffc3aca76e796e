"""A process-pool map for the data tools: serial when one worker suffices, workers stopped at
once on Ctrl-C, and safe to start from a process that already ran OpenCV."""
from __future__ import annotations

import multiprocessing
import sys
from typing import Callable, Iterable, Iterator, Sequence


def _init_worker() -> None:
    import cv2
    cv2.setNumThreads(1)  # one process per core already; OpenCV threads would oversubscribe


def process_pool(workers: int, preload: Iterable[str] = ()):
    """A multiprocessing Pool safe to start from a process that already ran OpenCV.

    A plain fork copies OpenCV's thread-pool state without its threads and the children hang,
    so workers come from a forkserver (which imports the `preload` modules once).
    """
    ctx = multiprocessing.get_context("forkserver")
    # Not the running `python -m` module itself: the workers also run it as __mp_main__, and a
    # preloaded copy as well makes runpy warn ("found in sys.modules ... prior to execution").
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    ctx.set_forkserver_preload([m for m in preload if spec is None or m != spec.name])
    return ctx.Pool(workers, initializer=_init_worker)


def parallel_map(func: Callable, items: Sequence, workers: int, ordered: bool = True,
                 preload: Iterable[str] = ()) -> Iterator:
    """Yield func(item) for every item, using up to `workers` processes (see process_pool)."""
    workers = max(1, min(workers, len(items)))
    if workers == 1:
        yield from map(func, items)
        return
    pool = process_pool(workers, preload)
    chunksize = max(1, min(32, len(items) // (8 * workers)))
    try:
        yield from (pool.imap if ordered else pool.imap_unordered)(func, items, chunksize=chunksize)
    except BaseException:  # Ctrl-C or a failure: stop the workers now (finished files are complete)
        pool.terminate()
        raise
    pool.close()
    pool.join()
