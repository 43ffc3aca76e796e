"""Worker processes, in one place: every DataLoader (`data_loader`) and process pool
(`process_pool`, `parallel_map`) the tools start comes from here, so that every worker dies with
the tool that started it.

A tool killed with SIGKILL runs no clean-up: its DataLoader workers would wait on their queues
(torch's watchdog looks every 5 s, then their exit can block flushing a batch nobody reads) and
a pool's workers would finish their tasks first, keeping their memory for minutes.
`die_with_parent` asks Linux to SIGKILL each worker when its parent dies (prctl
PR_SET_PDEATHSIG). A forkserver pool's workers are the forkserver's children: the forkserver
leaves when the tool is gone, once no worker holds its "tool alive" pipe (multiprocessing gives
each worker a copy; `die_with_parent` closes it). Linux sends the signal when the *thread* that
started the worker ends: the tools start loaders and pools from their main thread. Elsewhere
than Linux nothing is asked (the workers then leave when they next find their parent gone).

The pools are serial when one worker suffices, stopped at once on Ctrl-C, and safe to start from
a process that already ran OpenCV.
"""
from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import sys
from typing import Callable, Iterable, Iterator, Sequence

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _alive(pid: int) -> bool:
    """pid runs (a zombie, dead but not yet reaped, does not count)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[0]  # the name in () may hold spaces
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def die_with_parent(tool: int) -> None:
    """In a worker: SIGKILL this process when its parent dies (Linux; elsewhere nothing).

    `tool` is the pid of the process that asked for the worker: the parent itself (DataLoader,
    spawn pools) or the parent's parent (forkserver pools: the forkserver leaves when the tool
    is gone). A parent that died before the request was made sends no signal: then leave now.
    """
    _close_forkserver_alive_pipe()
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not permitted here (a sandbox): the worker keeps the platform's behaviour
    if os.getppid() != parent or not _alive(tool):
        os._exit(1)


def _close_forkserver_alive_pipe() -> None:
    """Close this worker's copy of the pipe by which the forkserver learns that the tool is gone
    (it leaves when every copy is closed; a worker needs none, it starts no processes)."""
    server = getattr(multiprocessing.forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
        server._forkserver_alive_fd = None


class _WorkerInit:
    """A DataLoader worker_init_fn: die_with_parent, then the caller's own init (picklable, for
    loaders whose workers are spawned)."""

    def __init__(self, tool: int, then: Callable[[int], None] | None = None):
        self.tool, self.then = tool, then

    def __call__(self, worker_id: int) -> None:
        die_with_parent(self.tool)
        if self.then is not None:
            self.then(worker_id)


def data_loader(dataset, *args, worker_init_fn: Callable[[int], None] | None = None, **kwargs):
    """torch's DataLoader, whose workers die with this process (the module's rule)."""
    import torch.utils.data  # here: the data tools that only use pools do not load torch
    return torch.utils.data.DataLoader(dataset, *args, worker_init_fn=_WorkerInit(os.getpid(), worker_init_fn),
                                       **kwargs)


def _init_worker(tool: int) -> None:
    die_with_parent(tool)
    import cv2
    cv2.setNumThreads(1)  # one process per core already; OpenCV threads would oversubscribe


def process_pool(workers: int, preload: Iterable[str] = (), method: str = "forkserver"):
    """A multiprocessing Pool whose workers die with this process (the module's rule).

    forkserver (the default) is safe to start from a process that already ran OpenCV: a plain
    fork copies OpenCV's thread-pool state without its threads and the children hang; the
    forkserver imports the `preload` modules once. "spawn" starts each worker afresh.
    """
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        # Not the running `python -m` module itself: the workers also run it as __mp_main__, and a
        # preloaded copy as well makes runpy warn ("found in sys.modules ... prior to execution").
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        ctx.set_forkserver_preload([m for m in preload if spec is None or m != spec.name])
    return ctx.Pool(workers, initializer=_init_worker, initargs=(os.getpid(),))


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
