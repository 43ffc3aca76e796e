"""Stage 1: the CAM classifier (models/cam.py), CAMs -> pseudo-labels (datasets/cam_labels.py) and
make_pseudo_labels.py's train / label commands (resume, sharding under torchrun, bad input).

Small settings throughout: ResNet-18 from random init, 64x80 synthetic images, 1-2 epochs.
"""
import csv
import json
import os
import subprocess

import numpy as np
import pytest
import torch

import torchvision

from conftest import corrupt_file, torchrun

import make_pseudo_labels as mpl
from datasets.cam_labels import cam_pseudo_label
from datasets.layout import IGNORE_INDEX, Layout, read_ids, split_path
from models.cam import build_cam_net, multi_scale_cam
from utils.io import read_label

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- the classifier
@pytest.mark.parametrize("stride, size", [(16, (4, 5)), (8, (8, 10))])
def test_cam_net_stride_and_logits_are_pooled_cams(stride, size):
    torch.manual_seed(0)
    net = build_cam_net(18, 20, output_stride=stride).eval()
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        logits, feat = net(x), net.features(x)
    assert logits.shape == (2, 20) and feat.shape[-2:] == size
    # GAP then the 1x1 head == the head's map averaged: CAMs are what the logits are made of
    assert torch.allclose(logits, net.classifier(feat).mean((2, 3)), atol=1e-5)
    assert torch.equal(net.cam(x), torch.relu(net.classifier(feat)))


def test_pretrained_file_loads_and_freezes_batchnorm(tmp_path):
    ref = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    net = build_cam_net(18, 20, pretrained=str(path))
    assert torch.equal(net.stem[0].weight, ref.conv1.weight)
    assert torch.equal(net.layer3[1].bn2.running_mean, ref.layer3[1].bn2.running_mean)
    # frozen BN: eval mode inside train(), no grad, out of the optimiser's groups
    net.train()
    before = net.layer1[0].bn1.running_mean.clone()
    net(torch.randn(2, 3, 64, 64))
    assert torch.equal(net.layer1[0].bn1.running_mean, before)
    bn_params = {id(p) for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    groups = net.param_groups()
    assert not bn_params & {id(p) for g in groups for p in g["params"]}
    assert [g["lr_scale"] for g in groups] == [0.1, 1.0]
    # random init: BN trains, one rate
    scratch = build_cam_net(18, 20, pretrained="none").train()
    scratch(torch.randn(2, 3, 64, 64))
    assert not torch.equal(scratch.layer1[0].bn1.running_mean, torch.zeros(64))
    assert [g["lr_scale"] for g in scratch.param_groups()] == [1.0, 1.0]
    # a ResNet-50 file for an R18 classifier: a clear error naming the file
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), tmp_path / "r50.pth")
    with pytest.raises(ValueError, match="r50.pth.*ResNet-50"):
        build_cam_net(18, 20, pretrained=str(tmp_path / "r50.pth"))


def test_multi_scale_cam_restricted_normalised_and_mirror_consistent():
    torch.manual_seed(1)
    net = build_cam_net(18, 20, output_stride=8).eval()
    x = torch.randn(1, 3, 48, 64)
    cams = multi_scale_cam(net, x, [2, 5], scales=(1.0, 0.5))
    assert cams.shape == (2, 48, 64) and cams.min() >= 0
    assert torch.allclose(cams.flatten(1).amax(1), torch.ones(2), atol=1e-4)
    # restriction = the same maps as computing every class and keeping channels 1 and 4
    every = multi_scale_cam(net, x, list(range(1, 21)), scales=(1.0, 0.5))
    assert torch.allclose(cams, every[[1, 4]], atol=1e-6)
    # with flip, the CAM of the mirrored image is the mirrored CAM
    mirrored = multi_scale_cam(net, x.flip(-1), [2, 5], scales=(1.0, 0.5))
    assert torch.allclose(mirrored, cams.flip(-1), atol=1e-5)
    assert multi_scale_cam(net, x, []).shape == (0, 48, 64)
    with pytest.raises(ValueError, match="outside 1..20"):
        multi_scale_cam(net, x, [0])
    with pytest.raises(ValueError, match="training mode"):
        multi_scale_cam(net.train(), x, [1])


# ----------------------------------------------------------------------------- CAMs -> labels
def test_cam_pseudo_label_thresholds_and_scribble_override():
    a = np.array([[0.9, 0.5, 0.2, 0.04, 0.0]], np.float32)
    b = np.array([[0.1, 0.6, 0.25, 0.01, 0.3]], np.float32)
    cams = np.stack([a, b])                    # classes 3 and 7, one row of 5 pixels
    label = cam_pseudo_label(cams, [3, 7], fg_thresh=0.3, bg_thresh=0.05)
    # 0.9 -> 3; 0.6 beats 0.5 -> 7; max 0.25 unsure; max 0.04 background; 0.3 reaches fg -> 7
    assert label.tolist() == [[3, 7, IGNORE_INDEX, 0, 7]]
    dense = cam_pseudo_label(cams, [3, 7], fg_thresh=0.3, bg_thresh=0.3)
    assert IGNORE_INDEX not in dense and dense.tolist() == [[3, 7, 0, 0, 7]]
    scribble = np.array([[IGNORE_INDEX, 3, 0, 7, IGNORE_INDEX]], np.uint8)
    over = cam_pseudo_label(cams, [3, 7], scribble, fg_thresh=0.3, bg_thresh=0.05)
    assert over.tolist() == [[3, 3, 0, 7, 7]]
    # no foreground class: background everywhere, strokes kept
    none = cam_pseudo_label(np.zeros((0, 1, 5), np.float32), [], scribble)
    assert none.tolist() == [[0, 3, 0, 7, 0]]
    with pytest.raises(ValueError, match="bg_thresh <= fg_thresh"):
        cam_pseudo_label(cams, [3, 7], fg_thresh=0.1, bg_thresh=0.2)
    with pytest.raises(ValueError, match="differ in size"):
        cam_pseudo_label(cams, [3, 7], np.zeros((2, 5), np.uint8))
    with pytest.raises(ValueError, match="expected CAMs"):
        cam_pseudo_label(cams, [3])


# ----------------------------------------------------------------------------- the script
TRAIN = ["--layers", "18", "--pretrained", "none", "--output_stride", "8", "--crop_size", "64",
         "--batchsize", "2", "--workers", "0", "--device", "cpu", "--lr", "0.05"]
LABEL = ["--scales", "1.0", "0.5", "--workers", "0", "--device", "cpu", "--preview", "2"]


@pytest.fixture(scope="module")
def cam_run(tmp_path_factory, synthetic_root):
    """One trained classifier (1 epoch) and its pseudo-labels for the synthetic train split."""
    synthetic_root = str(synthetic_root)  # a plain str in the checkpoint's args
    tmp = tmp_path_factory.mktemp("cam")
    labels = str(tmp / "class_labels.json")
    logdir = str(tmp / "log")
    assert mpl.main(["train", "--dataset_path", synthetic_root, "--class_labels", labels,
                     "--logdir", logdir, "--epochs", "1"] + TRAIN) == 0
    out = str(tmp / "cam_pseudo")
    ckpt = os.path.join(logdir, "last_checkpoint.pth")
    assert mpl.main(["label", "--dataset_path", synthetic_root, "--class_labels", labels,
                     "--checkpoint_path", ckpt, "--out", out] + LABEL) == 0
    return {"tmp": tmp, "labels": labels, "logdir": logdir, "ckpt": ckpt, "out": out}


def test_train_with_persistent_workers_same_run_and_exact_resume(cam_run, synthetic_root, tmp_path):
    """The classifier's loaders with --workers 2 (persistent workers, training and validation):
    metrics.csv as with --workers 0, and as a run stopped after epoch 1 and resumed."""
    def rows(logdir):
        with open(os.path.join(logdir, "metrics.csv"), newline="") as f:
            return [{k: v for k, v in r.items() if k != "time_s"} for r in csv.DictReader(f)]

    for name, extra in (("w0", []), ("w2", ["--workers", "2"]),
                        ("resumed", ["--workers", "2", "--stop_after", "1"]),
                        ("resumed", ["--workers", "2", "--resume", "auto"])):
        assert mpl.main(["train", "--dataset_path", str(synthetic_root), "--class_labels", cam_run["labels"],
                         "--logdir", str(tmp_path / name), "--epochs", "2"] + TRAIN + extra) == 0
    expected = rows(tmp_path / "w0")
    assert len(expected) == 2 and expected[0]["val_f1"] != "nan"
    assert rows(tmp_path / "w2") == expected
    assert rows(tmp_path / "resumed") == expected


def test_train_writes_logs_and_labels_follow_the_rules(cam_run, synthetic_root):
    logdir = cam_run["logdir"]
    for name in ("last_checkpoint.pth", "metrics.csv", "curves.png", "train_cams.png", "config.json"):
        assert os.path.isfile(os.path.join(logdir, name)), name
    classes = json.load(open(cam_run["labels"]))
    layout = Layout(synthetic_root)
    ids = read_ids(split_path(synthetic_root, "train"))
    assert sorted(classes) == sorted(ids)
    for id_ in ids:
        lab = read_label(os.path.join(cam_run["out"], id_ + ".png"))
        scribble = read_label(layout.path("scribble", id_))
        assert lab.shape == scribble.shape
        # only the image's own classes, background and 255 appear; strokes are kept exactly
        assert set(np.unique(lab).tolist()) <= {0, IGNORE_INDEX, *classes[id_]}
        known = scribble != IGNORE_INDEX
        assert np.array_equal(lab[known], scribble[known])
    scores = json.load(open(os.path.join(logdir, "pseudo_scores_cam_pseudo.json")))
    assert scores["images"] == len(ids) and 0 <= scores["miou"] <= 1
    assert os.path.isfile(os.path.join(logdir, "pseudo_preview_cam_pseudo.png"))


def test_label_resumes_and_redoes_only_missing_ids(cam_run, synthetic_root, capsys):
    out = cam_run["out"]
    ids = read_ids(split_path(synthetic_root, "train"))
    before = {i: os.stat(os.path.join(out, i + ".png")).st_mtime_ns for i in ids}
    content = read_label(os.path.join(out, ids[0] + ".png"))
    os.unlink(os.path.join(out, ids[0] + ".png"))
    capsys.readouterr()
    assert mpl.main(["label", "--dataset_path", synthetic_root, "--class_labels", cam_run["labels"],
                     "--checkpoint_path", cam_run["ckpt"], "--out", out, "--preview", "0"] + LABEL[:-2]) == 0
    assert "1 of 6 ids to label" in capsys.readouterr().out
    assert np.array_equal(read_label(os.path.join(out, ids[0] + ".png")), content)  # deterministic
    assert all(os.stat(os.path.join(out, i + ".png")).st_mtime_ns == before[i] for i in ids[1:])


def test_train_resume_is_exact(tmp_path, synthetic_root, cam_run):
    common = ["train", "--dataset_path", str(synthetic_root), "--class_labels", cam_run["labels"],
              "--epochs", "2", "--val_path", "none"] + TRAIN
    assert mpl.main(common + ["--logdir", str(tmp_path / "full")]) == 0
    # epoch 1 in one run, then --resume auto for epoch 2 (the schedule still spans 2 epochs)
    part = str(tmp_path / "part")
    assert mpl.main(common + ["--logdir", part, "--stop_after", "1"]) == 0
    assert torch.load(os.path.join(part, "last_checkpoint.pth"), weights_only=False)["epoch"] == 1
    assert mpl.main(common + ["--logdir", part, "--resume", "auto"]) == 0
    a = torch.load(os.path.join(tmp_path / "full", "last_checkpoint.pth"), weights_only=False)["state_dict"]
    b = torch.load(os.path.join(part, "last_checkpoint.pth"), weights_only=False)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_inputs_are_clear_errors(tmp_path, synthetic_root, cam_run, capsys):
    # a segmentation checkpoint (or any other file) is not a CAM classifier
    other = tmp_path / "seg.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "args": {"layers": 18}}, other)
    assert mpl.main(["label", "--dataset_path", synthetic_root, "--checkpoint_path", str(other),
                     "--out", str(tmp_path / "x")] + LABEL) == 1
    err = capsys.readouterr().err
    assert "seg.pth: is a segmentation network checkpoint (train.py), not a CAM classifier" in err
    assert "goes to eval.py" in err and err.count("\n") == 1
    # class labels that do not cover the split
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"train_00000": [1]}))
    assert mpl.main(["label", "--dataset_path", synthetic_root, "--class_labels", str(partial),
                     "--checkpoint_path", cam_run["ckpt"], "--out", str(tmp_path / "y")] + LABEL) == 1
    err = capsys.readouterr().err
    assert "partial.json: no class labels for 5 id(s)" in err
    assert not os.path.exists(tmp_path / "y") or not os.listdir(tmp_path / "y")
    with pytest.raises(SystemExit):
        mpl.parse_args(["label", "--fg_thresh", "0.1", "--bg_thresh", "0.2"])


def _torchrun(argv: list[str]) -> subprocess.CompletedProcess:
    proc, _ = torchrun("make_pseudo_labels.py", argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_torchrun_train_keeps_ranks_in_sync(tmp_path, synthetic_root, cam_run):
    proc = _torchrun(["train", "--dataset_path", str(synthetic_root), "--class_labels", cam_run["labels"],
                      "--logdir", str(tmp_path / "ddp"), "--epochs", "1"] + TRAIN)
    assert "weights identical on all 2 ranks" in proc.stdout
    ckpt = torch.load(tmp_path / "ddp" / "last_checkpoint.pth", weights_only=False)
    assert ckpt["epoch"] == 1 and not any(k.startswith("module.") for k in ckpt["state_dict"])


def test_torchrun_label_with_a_bad_image_on_one_rank_ends_every_rank(tmp_path, make_synthetic, cam_run):
    root = make_synthetic()
    ids = read_ids(split_path(root, "train"))
    bad = Layout(root).path("image", ids[1])  # ShardSampler: rank 1 alone reads it
    corrupt_file(bad)
    proc, seconds = torchrun("make_pseudo_labels.py", [
        "label", "--dataset_path", str(root), "--class_labels", cam_run["labels"],
        "--checkpoint_path", cam_run["ckpt"], "--out", str(tmp_path / "out"), "--preview", "0"] + LABEL[:-2],
        timeout=240)
    assert proc.returncode != 0 and seconds < 90
    assert (proc.stdout + proc.stderr).count(bad) == 1, proc.stderr[-3000:]


def test_torchrun_label_shards_and_matches_one_process(tmp_path, synthetic_root, cam_run):
    out = str(tmp_path / "ddp")
    proc = _torchrun(["label", "--dataset_path", synthetic_root, "--class_labels", cam_run["labels"],
                      "--checkpoint_path", cam_run["ckpt"], "--out", out, "--preview", "0"] + LABEL[:-2])
    assert proc.stdout.count("labelled 6 images") == 1  # counts reduced, rank 0 reports
    for id_ in read_ids(split_path(synthetic_root, "train")):
        assert np.array_equal(read_label(os.path.join(out, id_ + ".png")),
                              read_label(os.path.join(cam_run["out"], id_ + ".png")))
