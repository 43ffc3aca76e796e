"""utils.cli.run_main: a known error is one `error:` line naming the problem, also when it was
raised inside a DataLoader worker process (torch re-raises it with the worker's traceback); under
torchrun a failed rank reports once and exits without waiting at a barrier; running out of memory
in torch (CPU or GPU), numpy or OpenCV is one line naming the work and the settings to lower."""
import torch
from torch.utils.data import DataLoader, Dataset

from datasets.layout import DatasetError
from utils.cli import error_message, run_main


class _Broken(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        if i == 1:
            raise DatasetError("/data/JPEGImages/x.jpg: cannot decode")
        return torch.zeros(1)


def _consume(workers: int):
    for _ in DataLoader(_Broken(), batch_size=None, num_workers=workers):
        pass


def test_worker_error_is_reported_as_its_own_message(capsys):
    for workers in (0, 1):
        assert run_main(lambda: _consume(workers), (DatasetError,), "x") == 1
        err = capsys.readouterr().err
        assert err == "error: /data/JPEGImages/x.jpg: cannot decode\n", (workers, err)


def test_other_messages_are_kept_whole():
    e = DatasetError("line one\nline two: Caught nothing")
    assert error_message(e) == "line one\nline two: Caught nothing"


class _Exited(Exception):
    pass


def _fake_ranks(monkeypatch, rank: int):
    """run_main as rank `rank` of 2 under torchrun, with the process group's calls recorded."""
    import utils.cli as cli
    calls = []
    monkeypatch.setattr(cli.dist, "is_dist", lambda: True)
    monkeypatch.setattr(cli.dist, "rank", lambda: rank)
    monkeypatch.setattr(cli.dist, "is_main", lambda: rank == 0)
    monkeypatch.setattr(cli.dist, "world_size", lambda: 2)
    monkeypatch.setattr(cli.dist, "cleanup", lambda: calls.append("barrier+destroy"))
    monkeypatch.setattr(cli, "SECOND_RANK_GRACE_S", 0.0)

    def _exit(code):
        calls.append(f"exit {code}")
        raise _Exited()
    monkeypatch.setattr(cli.os, "_exit", _exit)
    return calls


def _raise(e):
    def work():
        raise e
    return work


def test_a_failed_rank_never_waits_at_a_barrier(monkeypatch, capsys):
    import pytest
    cases = [(DatasetError("/d/x.jpg: cannot decode"), 1, "error: /d/x.jpg: cannot decode"),
             (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), 1, "lower --batchsize"),
             (ZeroDivisionError("a bug"), 1, "ZeroDivisionError: a bug"),
             (KeyboardInterrupt(), 130, "interrupted")]
    for rank in (0, 1):
        for exc, code, text in cases:
            calls = _fake_ranks(monkeypatch, rank)
            with pytest.raises(_Exited):
                run_main(_raise(exc), (DatasetError,), "x")
            assert calls == [f"exit {code}"], (exc, calls)  # no barrier, no teardown
            err = capsys.readouterr().err
            assert err.count(text) == 1 and err.startswith(f"[rank {rank}] "), err
    calls = _fake_ranks(monkeypatch, 1)
    assert run_main(lambda: None, (DatasetError,), "x") == 0
    assert calls == ["barrier+destroy"]  # success: every rank meets the others, then tears down


# ----------------------------------------------------------------------------- out of memory
def real_allocation_failures():
    """What torch (CPU), numpy and OpenCV raise when an allocation fails: each asks for more
    than the address space holds, so it fails on any machine, at once."""
    import cv2
    import numpy as np
    failures = []
    for allocate in (lambda: torch.empty(2**62, dtype=torch.uint8), lambda: np.empty(2**62, np.uint8),
                     lambda: cv2.resize(np.zeros((2, 2, 4), np.float64), (2**21, 2**21))):
        try:
            allocate()
        except Exception as e:  # noqa: BLE001 - the point: whatever each library raises
            failures.append(e)
    assert len(failures) == 3
    return failures


def test_running_out_of_memory_anywhere_is_one_line_naming_the_work_and_the_settings(capsys):
    import pytest
    from utils.cli import is_out_of_memory, naming_out_of_memory
    torch_cpu, numpy_, opencv = real_allocation_failures()
    cases = [(torch_cpu, "4.00 EiB"), (numpy_, "4.00 EiB"), (opencv, "128.00 TiB"),
             (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has ..."), "2.00 GiB")]
    for e, amount in cases:
        assert is_out_of_memory(e)

        def work():
            with naming_out_of_memory("image 2007_000033"):
                raise e
        assert run_main(work, (DatasetError,), "x", memory_hint="lower --base_size") == 1
        assert capsys.readouterr().err == (f"error: out of memory on image 2007_000033 (could not allocate "
                                           f"{amount}); lower --base_size\n")
    # outside a named block: the generic line, the default settings (train.py's)
    assert run_main(_raise(torch_cpu), (DatasetError,), "x") == 1
    assert capsys.readouterr().err.startswith("error: out of memory (could not allocate")
    # other errors are not taken for it, and pass through the block unchanged
    for e in (RuntimeError("shape mismatch"), ValueError("can't allocate memory? no"), KeyError("x")):
        assert not is_out_of_memory(e)
        with pytest.raises(type(e)), naming_out_of_memory("image y"):
            raise e


class _Huge(Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, i):
        return torch.empty(2**62, dtype=torch.uint8)


def test_out_of_memory_in_a_loader_worker_is_one_line_too(capsys):
    def work():
        for _ in DataLoader(_Huge(), batch_size=None, num_workers=1):
            pass
    assert run_main(work, (DatasetError,), "x") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory (could not allocate 4.00 EiB)") and err.count("\n") == 1
