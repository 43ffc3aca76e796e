"""utils.cli.run_main: a known error is one `error:` line naming the problem, also when it was
raised inside a DataLoader worker process (torch re-raises it with the worker's traceback)."""
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
