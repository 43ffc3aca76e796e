"""utils.cli.run_main: a known error is one `error:` line naming the problem, also when it was
raised inside a DataLoader worker process (torch re-raises it with the worker's traceback); under
torchrun a failed rank reports once and exits without waiting at a barrier."""
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
