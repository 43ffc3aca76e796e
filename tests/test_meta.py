"""datasets/meta.py: the optional dataset.yaml, its checks, the VOC defaults without it."""
from __future__ import annotations

import os

import numpy as np
import pytest

from datasets.meta import (META_FILE, VOC_CLASSES, VOC_META, DatasetMeta, MetaError, load_meta,
                           meta_of_checkpoint, resolve_num_classes)
from utils.palette import voc_palette

GRAY = """classes: [background, left_ventricle, myocardium, right_ventricle]   # index = label value
palette: [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
background: 0
ignore_index: 255
image_suffix: .png
splits_dir: ImageSets/SegmentationAug
"""


def test_no_file_means_voc(tmp_path):
    meta = load_meta(str(tmp_path))
    assert meta is VOC_META and meta.num_classes == 21 and meta.classes == VOC_CLASSES
    assert meta.image_suffix == ".jpg" and meta.background == 0 and meta.ignore_index == 255
    np.testing.assert_array_equal(meta.palette_array(), voc_palette())


def test_the_issue_example_reads_and_round_trips(tmp_path):
    (tmp_path / META_FILE).write_text(GRAY)
    meta = load_meta(str(tmp_path))
    assert meta.classes[2] == "myocardium" and meta.num_classes == 4 and meta.image_suffix == ".png"
    pal = meta.palette_array()
    assert pal.shape == (256, 3) and tuple(pal[3]) == (128, 128, 0)
    assert tuple(pal[255]) == tuple(voc_palette()[255])  # ignore keeps VOC's cream
    assert tuple(meta.colorize(np.array([[1, 3]]))[0, 1]) == (128, 128, 0)
    back = meta_of_checkpoint({"dataset_meta": meta.to_dict()})
    assert back.to_dict() == meta.to_dict() and meta_of_checkpoint({}) is None
    # a rewritten file is read again (the cache is keyed by its mtime)
    (tmp_path / META_FILE).write_text(GRAY.replace("right_ventricle", "rv"))
    os.utime(tmp_path / META_FILE, ns=(1, 1))
    assert load_meta(str(tmp_path)).classes[3] == "rv"


@pytest.mark.parametrize("text, message", [
    ("classes: []\n", "non-empty list"),
    ("classes: [a, a]\n", "repeated"),
    ("classes: [a, b]\ncolours: []\n", "unknown key(s) ['colours']"),
    ("classes: [a, b]\npalette: [[0, 0, 0]]\n", "one [r, g, b]"),
    ("classes: [a, b]\npalette: [[0, 0, 0], [0, 0, 300]]\n", "one [r, g, b]"),
    ("classes: [a, b]\nbackground: 1\n", "must be 0 (or null)"),
    ("classes: [a, b]\nbackground: 5\n", "class index 0..1"),
    # 255 is what every consumer ignores: another value would be read and then not honoured
    ("classes: [a, b]\nignore_index: 1\n", "'ignore_index' 1 is not supported"),
    ("classes: [a, b]\nignore_index: 0\n", "remap that value to 255"),
    ("classes: [a, b]\n1: x\n", "unknown key(s) [1]"),      # keys of mixed types
    ("classes: [caf\xe9, b]\n", "not UTF-8 text (byte 0xe9"),  # latin-1 (written below)
    ("classes: [a, b]\nimage_suffix: png\n", "'.png'"),
    ("classes: [a, b\n", "cannot read"),
    ("- a\n- b\n", "expected a mapping"),
    ("classes: [a, b]\nmean: [0.5, 0.5]\n", "'mean' must be three numbers"),
    ("classes: [a, b]\nstd: [0.2, 0.0, 0.2]\n", "'std' must be three numbers"),
    ("classes: [a, b]\nmetrics: [dice, miou]\n", "'metrics' must list some of dice, hd95, assd"),
    ("classes: [a, b]\nvolumes: /abs/volumes.csv\n", "'volumes' must be a file relative to the root"),
])
def test_bad_descriptions_name_the_file_and_key(tmp_path, text, message):
    (tmp_path / META_FILE).write_text(text, encoding="latin-1")
    with pytest.raises(MetaError) as e:
        load_meta(str(tmp_path))
    assert str(e.value).startswith(str(tmp_path / META_FILE)) and message in str(e.value)


def test_numclasses_defaults_to_the_description_and_conflicts_are_errors(tmp_path):
    (tmp_path / META_FILE).write_text(GRAY)
    meta = load_meta(str(tmp_path))
    assert resolve_num_classes(meta, None) is meta and resolve_num_classes(meta, 4) is meta
    with pytest.raises(MetaError, match=r"--numclasses 6 conflicts with .*dataset.yaml, which lists 4"):
        resolve_num_classes(meta, 6)
    # without a description --numclasses N works as before: the first N VOC names
    six = resolve_num_classes(VOC_META, 6)
    assert six.classes == VOC_CLASSES[:6] and six.palette == VOC_META.palette[:6]
    assert resolve_num_classes(VOC_META, 23).classes[-2:] == ("class21", "class22")


def test_no_background_refuses_what_needs_one():
    meta = DatasetMeta.from_dict({"classes": ["road", "car"], "background": None}, "x/dataset.yaml")
    with pytest.raises(MetaError, match="no background class.*needed by LoRM.*--l_lorm 0 --l_ds 0 --l_dc 0"):
        meta.require_background("LoRM")
    VOC_META.require_background("LoRM")  # has one: no error


def test_mean_std_metrics_and_volumes_round_trip_and_reach_every_transform(tmp_path):
    """dataset.yaml's mean / std (ImageNet's by default) normalise training and evaluation alike."""
    import torch

    from datasets.transforms import TrainTransform, ValTransform, denormalize
    (tmp_path / META_FILE).write_text("classes: [bg, a]\nmean: [0.25, 0.25, 0.25]\nstd: [0.2, 0.2, 0.2]\n"
                                      "metrics: [dice, hd95]\nvolumes: volumes.csv\n")
    meta = load_meta(str(tmp_path))
    assert meta.mean == (0.25,) * 3 and meta.std == (0.2,) * 3 and meta.metrics == ("dice", "hd95")
    assert meta.volumes == "volumes.csv" and meta_of_checkpoint({"dataset_meta": meta.to_dict()}).to_dict() == meta.to_dict()
    assert VOC_META.mean == (0.485, 0.456, 0.406) and VOC_META.metrics == () and VOC_META.volumes is None
    image = np.full((20, 20, 3), 102, np.uint8)  # 0.4 -> (0.4 - 0.25) / 0.2 = 0.75
    val = ValTransform(None, meta.mean, meta.std)({"image": image})["image"]
    assert torch.allclose(val, torch.full_like(val, 0.75))
    train = TrainTransform(12, scale_range=(1, 1), p_rotate=0, p_blur=0, p_flip=0, mean=meta.mean, std=meta.std)
    got = train({"image": image, "scribble": np.zeros((20, 20), np.uint8)}, rng=np.random.default_rng(0))["image"]
    assert torch.allclose(got, torch.full_like(got, 0.75))
    assert (denormalize(val, meta.mean, meta.std) == 102).all()
