"""Your own data (issue 13): the README's "Train on your own data" chain on the gray4 preset, a
set unlike VOC (4 classes, grey .png images, its own palette, dataset.yaml), end to end with
tiny epochs: check -> distance maps -> class labels -> stage 1 (CAM classifier, CAM pseudo-labels,
their D_c) -> training -> eval -> predict, each through its command-line entry point, with no
--numclasses anywhere (the description gives it). Then the checkpoint predicts in gray4's
palette and names with the dataset moved away.
"""
import contextlib
import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import eval as evaluation
import make_pseudo_labels
import predict
import train
from datasets import check, class_labels, distance_map, synthetic
from datasets.meta import load_meta
from datasets.synthetic import GRAY4_CLASSES, GRAY4_PALETTE
from utils.checkpoint import load_checkpoint


def _run(main, argv) -> str:
    """main(argv) in this process; its stdout + stderr. Fails on a non-zero exit."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:
            rc = e.code
    assert rc in (0, None), f"{main.__module__} {' '.join(map(str, argv))} -> {rc}:\n{out.getvalue()[-3000:]}"
    return out.getvalue()


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_gray4_chain_end_to_end(tmp_path):
    data = tmp_path / "gray4"
    synthetic.generate(str(data), train=8, val=4, size=(64, 64), preset="gray4", progress=False)
    assert load_meta(str(data)).classes == GRAY4_CLASSES
    # Start from what a user has: images, masks and scribbles (no pseudo-labels, no maps).
    for sub in ("pseudo_label", "distance_map", "distance_pseudo"):
        shutil.rmtree(data / sub)

    # distance maps of the scribbles, then the full check (grey .png images, 4 classes)
    _run(distance_map.main, ["--kind", "scribble", "--src", data / "pascal_2012_scribble",
                             "--dst", data / "distance_map", "--workers", 1])
    # stage 1: image-level labels from the scribbles, a CAM classifier, its pseudo-labels
    _run(class_labels.main, ["--root", data])
    labels = json.loads((data / "class_labels_train.json").read_text())
    assert labels and all(set(v) <= {1, 2, 3} for v in labels.values())  # foreground of gray4
    cam = tmp_path / "cam"
    _run(make_pseudo_labels.main, ["train", "--dataset_path", data, "--logdir", cam, "--layers", 18,
                                   "--pretrained", "none", "--output_stride", 8, "--crop_size", 64,
                                   "--batchsize", 4, "--lr", 0.1, "--epochs", 1, "--workers", 0,
                                   "--device", "cpu"])
    assert load_checkpoint(str(cam / "last_checkpoint.pth"))["dataset_meta"]["classes"] == list(GRAY4_CLASSES)
    _run(make_pseudo_labels.main, ["label", "--dataset_path", data, "--checkpoint_path",
                                   cam / "last_checkpoint.pth", "--out", "cam_pseudo", "--workers", 0,
                                   "--device", "cpu"])
    pseudo = [np.asarray(Image.open(p)) for p in sorted((data / "cam_pseudo").glob("*.png"))]
    assert len(pseudo) == 8 and set(np.unique(np.concatenate([p.ravel() for p in pseudo]))) <= {0, 1, 2, 3, 255}
    _run(distance_map.main, ["--kind", "pseudo", "--src", data / "cam_pseudo",
                             "--dst", data / "distance_cam_pseudo", "--workers", 1])
    report = _run(check.main, ["--root", data, "--pseudo_path", "cam_pseudo", "--distancemap_c", "distance_cam_pseudo"])
    assert "4 classes" in report or "background, body, organ, lesion" in report, report

    # training with every CDSP term on the CAM pseudo-labels; --numclasses comes from dataset.yaml
    log = tmp_path / "train"
    _run(train.main, ["--dataset_path", data, "--pseudo_path", "cam_pseudo",
                      "--distancemap_c", "distance_cam_pseudo", "--model_type", "deeplabv2",
                      "--layers", 18, "--pretrained", "none", "--batchsize", 4, "--lr", 0.01,
                      "--warmup", 0, "--epochs", 1, "--crop_size", 49, "--workers", 0,
                      "--device", "cpu", "--logdir", log])
    ckpt = load_checkpoint(str(log / "last_checkpoint.pth"))
    assert ckpt["args"]["numclasses"] == 4
    assert ckpt["dataset_meta"]["classes"] == list(GRAY4_CLASSES)
    assert [tuple(c) for c in ckpt["dataset_meta"]["palette"]] == list(GRAY4_PALETTE)

    # eval: gray4's class names in the report, its palette in the predictions
    save = tmp_path / "eval"
    _run(evaluation.main, ["--checkpoint_path", log / "last_checkpoint.pth", "--dataset_path", data,
                           "--save_path", save, "--base_size", 64, "--crop_size", 49, "--scales", 1,
                           "--workers", 0, "--device", "cpu"])
    text = (tmp_path / "eval.txt").read_text()
    assert all(name in text for name in GRAY4_CLASSES) and "aeroplane" not in text
    metrics = json.loads((save / "metrics.json").read_text())
    assert list(metrics["iou"]) == list(GRAY4_CLASSES) and len(metrics["confusion_matrix"]) == 4
    with Image.open(save / "val_00000.png") as img:
        assert img.mode == "P"
        assert np.array_equal(np.asarray(img.getpalette()[:12]).reshape(4, 3), np.asarray(GRAY4_PALETTE))

    # predict with the dataset gone: the checkpoint alone names the classes and colours
    images = tmp_path / "mine"
    images.mkdir()
    for id_ in ("val_00000", "val_00001"):
        shutil.copy(data / "JPEGImages" / f"{id_}.png", images / f"{id_}.png")
    shutil.move(str(data), str(tmp_path / "moved_away"))
    out = tmp_path / "pred"
    printed = _run(predict.main, ["--checkpoint_path", log / "last_checkpoint.pth", "--images", images,
                                  "--out", out, "--base_size", 64, "--crop_size", 49, "--scales", 1,
                                  "--device", "cpu", "--overlay"])
    assert "background, body, organ, lesion" in printed
    for id_ in ("val_00000", "val_00001"):
        with Image.open(out / f"{id_}.png") as img:
            assert img.mode == "P" and img.size == (64, 64)
            assert set(np.unique(np.asarray(img))) <= {0, 1, 2, 3}
            assert np.array_equal(np.asarray(img.getpalette()[:12]).reshape(4, 3), np.asarray(GRAY4_PALETTE))
        # eval.py predicted the same labels from the same checkpoint and image
        with Image.open(out / f"{id_}.png") as a, Image.open(save / f"{id_}.png") as b:
            assert np.array_equal(np.asarray(a), np.asarray(b))
