"""datasets/random_walker.py: WSL4MIS's random walker, any class count, missing classes, the tool."""
from __future__ import annotations

import os

import numpy as np
import pytest

from datasets import random_walker as rw
from utils.io import read_label, save_png
from utils.outputs import MARK


def _scene(h=30, w=36):
    """Three nested structures (values 0..3) and a cross of strokes through them; 255 elsewhere."""
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - h / 2, xx - w / 2)
    truth = np.zeros((h, w), np.uint8)
    truth[r < 12] = 1
    truth[r < 8] = 2
    truth[r < 4] = 3
    image = (0.15 + 0.25 * truth).astype(np.float64)
    scribble = np.full((h, w), 255, np.uint8)
    for line in (np.s_[h // 2, 2:-2], np.s_[2:-2, w // 2]):  # a cross through every structure, both sides
        scribble[line] = truth[line]
    return image, scribble, truth


def _wsl4mis(data, seed):
    """WSL4MIS's pseudo_label_generator (acdc_pseudo_label_random_walker.py), as published."""
    from skimage.exposure import rescale_intensity
    from skimage.segmentation import random_walker
    markers = np.ones_like(seed)
    markers[seed == 4] = 0
    markers[seed == 0] = 1
    markers[seed == 1] = 2
    markers[seed == 2] = 3
    markers[seed == 3] = 4
    data = rescale_intensity(data, in_range=(-0.35, 1.35), out_range=(-1, 1))
    return random_walker(data, markers, beta=100, mode="bf") - 1


def test_equals_wsl4mis_when_every_class_is_scribbled():
    image, scribble, truth = _scene()
    rng = np.random.default_rng(0)
    noisy = np.clip(image + 0.03 * rng.standard_normal(image.shape), 0, 1)
    ours = rw.random_walker_label(noisy, scribble, 4)
    theirs = _wsl4mis(noisy, np.where(scribble == 255, 4, scribble).astype(np.int64))
    np.testing.assert_array_equal(ours, theirs)
    assert (ours == truth).mean() > 0.95


def test_missing_classes_walk_ignore_zero_and_no_scribble():
    image, scribble, truth = _scene()
    no_myo = np.where(scribble == 2, 255, scribble)
    walked = rw.random_walker_label(image, no_myo, 4)
    assert set(np.unique(walked)) == {0, 1, 3}  # the classes the scribble has, and only those
    assert (walked == truth)[truth != 2].mean() > 0.95
    assert (rw.random_walker_label(image, no_myo, 4, missing="ignore") == 255).all()
    assert (rw.random_walker_label(image, no_myo, 4, missing="zero") == 0).all()  # WSL4MIS's rule
    only_bg = np.where(scribble == 0, 0, 255).astype(np.uint8)
    assert (rw.random_walker_label(image, only_bg, 4) == 0).all()
    assert (rw.random_walker_label(image, np.full_like(scribble, 255), 4) == 255).all()


def test_any_class_count_and_colour_images():
    image, scribble, truth = _scene()
    five = truth.copy()
    five[:, :3] = 4  # a fifth class along the left edge
    s5 = scribble.copy()
    s5[5:25, 1] = 4
    img5 = np.where(five == 4, 0.95, image)
    got = rw.random_walker_label(img5, s5, 5)
    assert (got == five).mean() > 0.9 and 4 in got
    rgb = np.stack([image, image, image], -1)
    assert rw.walker_input((rgb * 255).astype(np.uint8))[0].ndim == 2  # grey stored as RGB: one channel
    colour = np.stack([image, 1 - image, image * 0.5], -1)
    data, axis = rw.walker_input((colour * 255).astype(np.uint8))
    assert axis == -1 and (rw.random_walker_label(data, scribble, 4) == truth).mean() > 0.9


def _dataset(root, n=4):
    image, scribble, truth = _scene()
    for sub in ("JPEGImages", "pascal_2012_scribble", "SegmentationClassAug", "ImageSets/SegmentationAug"):
        os.makedirs(root / sub, exist_ok=True)
    ids = [f"s{i}" for i in range(n)]
    for i in ids:
        save_png((image * 255).astype(np.uint8), str(root / "JPEGImages" / f"{i}.png"))
        save_png(scribble, str(root / "pascal_2012_scribble" / f"{i}.png"))
        save_png(truth, str(root / "SegmentationClassAug" / f"{i}.png"))
    (root / "ImageSets/SegmentationAug/train.txt").write_text("\n".join(ids) + "\n")
    (root / "dataset.yaml").write_text("classes: [bg, a, b, c]\nimage_suffix: .png\nmetrics: [dice, hd95]\n")
    return ids


def test_folder_tool_writes_owns_resumes_and_scores(tmp_path, capsys):
    root = tmp_path / "ds"
    ids = _dataset(root)
    assert rw.main(["--root", str(root), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "mIoU" in out and "Dice (%)" in out  # scored by datasets.score_labels, per case
    labels = {i: read_label(str(root / "random_walker" / f"{i}.png")) for i in ids}
    _, _, truth = _scene()
    assert all((lab == truth).mean() > 0.95 for lab in labels.values())
    assert (root / "random_walker" / MARK).is_file()
    # resumable: existing outputs are kept; a deleted one is made again
    kept = root / "random_walker" / "s0.png"
    stamp = kept.stat().st_mtime_ns
    os.remove(root / "random_walker" / "s1.png")
    assert rw.main(["--root", str(root), "--workers", "1"]) == 0
    assert kept.stat().st_mtime_ns == stamp and (root / "random_walker" / "s1.png").is_file()


def test_never_writes_into_an_input_or_a_foreign_folder(tmp_path, capsys):
    root = tmp_path / "ds"
    _dataset(root)
    before = sorted(os.listdir(root / "pascal_2012_scribble"))
    assert rw.main(["--root", str(root), "--out", "pascal_2012_scribble"]) == 1
    assert "input folder" in capsys.readouterr().err
    assert sorted(os.listdir(root / "pascal_2012_scribble")) == before
    (root / "mine").mkdir()
    (root / "mine" / "s0.png").write_bytes(b"x")
    assert rw.main(["--root", str(root), "--out", "mine"]) == 1
    assert "was not made by random_walker" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        rw.main(["--root", str(root), "--out", "../elsewhere"])


def test_a_bad_file_is_named_and_the_others_labelled(tmp_path, capsys):
    root = tmp_path / "ds"
    _dataset(root)
    save_png(np.full((30, 36), 7, np.uint8), str(root / "pascal_2012_scribble" / "s2.png"))
    assert rw.main(["--root", str(root), "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert "s2.png: scribble values [7]" in err
    assert sorted(n for n in os.listdir(root / "random_walker") if n.endswith(".png")) == ["s0.png", "s1.png", "s3.png"]
