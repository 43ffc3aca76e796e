"""The one dataset class for the ScribbleSup layout (SPEC §1).

`ScribbleDataset(root, split, fields)` returns, per id, a dict holding "id", "orig_size" (H, W)
and exactly the fields asked for -- image, scribble, pseudo, dist_s, dist_c, mask -- and reads
nothing else from disk (a loss term with weight 0 never asks for its field, so its folder need
not even exist). Where each field lives is datasets.layout's business; what the sample goes
through is datasets.transforms'. Without a transform the fields are numpy arrays (image HxWx3
uint8, the others HxW uint8); with one, whatever it returns (tensors for Train/ValTransform).
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np
from torch.utils.data import Dataset

from datasets.layout import (FIELDS, LABEL_FIELDS, TRAIN_FIELDS, DatasetError, Layout,
                             check_label_values, read_ids, split_path)
from datasets.transforms import augmentation_rng
from utils.io import read_image, read_label


class ScribbleDataset(Dataset):
    """Samples of one split of a ScribbleSup-layout root; only the requested fields are read."""

    def __init__(self, root: str, split: str = "train", fields: Sequence[str] = TRAIN_FIELDS,
                 folders: dict | None = None, transform: Callable[[dict], dict] | None = None,
                 num_classes: int | None = None):
        fields = tuple(fields)
        unknown = [f for f in fields if f not in FIELDS]
        if unknown or not fields:
            raise ValueError(f"fields must be a non-empty subset of {FIELDS}, got {fields}")
        self.root, self.fields, self.transform = root, fields, transform
        self.layout = Layout(root, dict(folders or {}))
        # label values must be < this (the run's --numclasses, else the description's) or ignore
        self.num_classes = self.layout.meta.num_classes if num_classes is None else num_classes
        for name in fields:  # fail now, not in a worker at iteration 1,000
            folder = self.layout.folder(name)
            if not os.path.isdir(folder):
                raise DatasetError(f"{folder}: folder of field '{name}' not found")
        self.ids = read_ids(split_path(root, split))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key) -> dict:
        """`key`: an index, or `(index, (seed, epoch))` (utils.training.EpochKeys, the training
        loader): the transform then draws from augmentation_rng(seed, epoch, index)."""
        index, rng = key, None
        if isinstance(key, tuple):
            index, (seed, epoch) = key
            rng = augmentation_rng(seed, epoch, index)
        id_ = self.ids[index]
        sample = {"id": id_}
        reference = None  # (path, (H, W)) of the first field read: the image when asked for
        for name in self.fields:
            path = self.layout.path(name, id_)
            array = _read_field(name, path, self.num_classes)
            if reference is None:
                reference = (path, array.shape[:2])
            elif array.shape[:2] != reference[1]:
                raise DatasetError(f"{path}: size {_hw(array.shape)} differs from "
                                   f"{_hw(reference[1])} of {reference[0]}")
            sample[name] = array
        sample["orig_size"] = tuple(int(v) for v in reference[1])
        if self.transform is None:
            return sample
        return self.transform(sample) if rng is None else self.transform(sample, rng=rng)

    def __repr__(self) -> str:
        return (f"ScribbleDataset(root={self.root!r}, {len(self)} ids, fields={self.fields}, "
                f"transform={self.transform!r})")


def _hw(shape) -> str:
    return f"{shape[0]}x{shape[1]}"


def _read_field(name: str, path: str, num_classes: int) -> np.ndarray:
    """One field as uint8 (image HxWx3 RGB; the rest HxW, channel 0 of an RGB map)."""
    try:
        array = read_image(path) if name == "image" else read_label(path)
    except OSError as e:  # FileNotFoundError included; utils.io messages name the file
        raise DatasetError(str(e)) from None
    if name in LABEL_FIELDS:
        # A value >= the run's num_classes other than 255 has no class in the network: it
        # would fail far from here, without a file name (cross-entropy: an IndexError on the
        # CPU, a device-side assert on CUDA; the metric: a ValueError), so name the file now.
        check_label_values(array, num_classes, path)
    return array
