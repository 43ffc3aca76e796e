"""What every tool writes and never touches (docs/outputs.md), and the one-line answer to bad
input: the audit's data-loss cases, writes outside the output folder through ids, the id
reader, --device, checkpoints of the wrong kind, the run lock, and a table of hostile inputs
each giving exactly one `error:` line, a non-zero exit, no traceback and no output."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import eval as evaluation
import make_pseudo_labels as mpl
import predict
import train
from datasets import class_labels, distance_map, score_labels, simulate_scribbles
from datasets.check import check_dataset
from datasets.layout import DatasetError, read_ids, split_path
from datasets.meta import load_meta
from models import build_model
from models.cam import build_cam_net
from stage1.classifier import CAMTask
from utils.outputs import LOCK, MARK, RunLock, claim_output_dir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--layers", "18", "--pretrained", "none", "--batchsize", "2", "--crop_size", "65",
        "--workers", "0", "--lr", "0.01", "--warmup", "1", "--pseudo_path", "pseudo_label"]
INFER = ["--scales", "1.0", "--base_size", "80", "--crop_size", "48"]  # predict.py's
SMALL = INFER + ["--workers", "0"]  # eval.py's
NO_GPU = not torch.cuda.is_available()


def call(main, argv) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a CLI's main in this process; argparse's exit included.
    An exception other than SystemExit propagates: it would have been a traceback."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def tree(folder) -> dict:
    """Every file under `folder` with its bytes' hash: what a refused run must leave unchanged."""
    found = {}
    for d, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(d, f)
            found[os.path.relpath(p, folder)] = hash(open(p, "rb").read())
    return found


def one_error_line(rc, err) -> str:
    assert rc not in (0, None), err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory, synthetic_root):
    """A copy of the synthetic set, a segmentation and a CAM classifier checkpoint (random
    weights: nothing here needs a trained network)."""
    tmp = tmp_path_factory.mktemp("world")
    data = tmp / "data"
    shutil.copytree(synthetic_root, data)
    seg = tmp / "models" / "seg.pth"
    seg.parent.mkdir()
    torch.save({"state_dict": build_model("deeplabv2", 18, 21, lorm=False).state_dict(), "epoch": 1,
                "kind": "segmentation", "args": {"model_type": "deeplabv2", "layers": 18, "numclasses": 21}},
               seg)
    cam = tmp / "cam_log" / "last_checkpoint.pth"  # in the classifier's log folder, as train leaves it
    claim_output_dir(str(cam.parent), CAMTask.tool).claim(["last_checkpoint.pth"])
    meta = load_meta(str(data))  # the classes the data lists: `label` refuses any other
    torch.save({"state_dict": build_cam_net(18, meta.num_classes - 1, None, 8).state_dict(), "epoch": 1,
                "kind": "cam_classifier", "args": {"layers": 18, "output_stride": 8, "logdir": str(cam.parent)},
                "dataset_meta": meta.to_dict()}, cam)
    return {"tmp": tmp, "data": data, "seg": seg, "cam": cam,
            "val_id": read_ids(split_path(str(data), "val"))[0]}


# ----------------------------------------------------------------------------- data loss
@pytest.mark.parametrize("folder", ["SegmentationClassAug", "pascal_2012_scribble", "pseudo_label", "."])
def test_label_never_writes_over_the_datasets_folders(world, folder):
    """The audit: `label --out SegmentationClassAug --overwrite` replaced the masks with CAM
    labels and scored them against themselves (mIoU 100)."""
    data = world["data"]
    before = tree(data)
    rc, _, err = call(mpl.main, ["label", "--dataset_path", data, "--checkpoint_path", world["cam"],
                                 "--out", os.path.join(data, folder), "--overwrite", "--device", "cpu",
                                 "--workers", "0", "--scales", "1.0"])
    line = one_error_line(rc, err)
    assert "--out" in line and ("input folder" in line or "was not made by" in line), line
    assert tree(data) == before


def test_eval_into_a_users_folder_or_an_empty_save_path_writes_nothing(world, tmp_path, monkeypatch):
    user = tmp_path / "results"
    user.mkdir()
    for name in ("metrics.json", "confusion_matrix.png", f"{world['val_id']}.png"):
        (user / name).write_text("mine")
    before = tree(tmp_path)
    rc, _, err = call(evaluation.main, ["--checkpoint_path", world["seg"], "--dataset_path", world["data"],
                                        "--save_path", user, "--device", "cpu", *SMALL])
    assert "was not made by eval.py" in one_error_line(rc, err) and tree(tmp_path) == before
    monkeypatch.chdir(tmp_path)  # '' was the working directory, with a report '..txt'
    for save in ("", ".", "/"):
        rc, _, err = call(evaluation.main, ["--checkpoint_path", world["seg"], "--dataset_path", world["data"],
                                            "--save_path", save, *SMALL])
        assert "--save_path" in one_error_line(rc, err)
    assert tree(tmp_path) == before


def test_predict_never_writes_over_a_dataset_mask_or_an_input(world):
    data = world["data"]
    before = tree(data)
    for out in (data / "SegmentationClassAug", data / "JPEGImages", data / "JPEGImages" / "pred"):
        rc, _, err = call(predict.main, ["--checkpoint_path", world["seg"], "--images", data / "JPEGImages",
                                         "--out", out, "--device", "cpu", *INFER])
        assert "--out" in one_error_line(rc, err)
    assert tree(data) == before


def test_train_refuses_a_foreign_config_and_metrics_and_a_used_log_dir(world, tmp_path):
    data = world["data"]
    foreign = tmp_path / "someone"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"mine": true}')
    rc, _, err = call(train.main, ["--dataset_path", data, "--logdir", foreign, *TINY, "--epochs", "1"])
    assert "was not made by train.py (it holds config.json)" in one_error_line(rc, err)
    assert os.listdir(foreign) == ["config.json"]
    # our folder, with someone's metrics.csv put into it: named, not a KeyError
    ours = tmp_path / "ours"
    claim_output_dir(str(ours), "train.py")
    (ours / "metrics.csv").write_text("a,b\n1,2\n")
    rc, _, err = call(train.main, ["--dataset_path", data, "--logdir", ours, *TINY, "--epochs", "1"])
    assert "metrics.csv: exists and was not written by train.py" in one_error_line(rc, err)
    assert (ours / "metrics.csv").read_text() == "a,b\n1,2\n"

    log = tmp_path / "log"
    assert call(train.main, ["--dataset_path", data, "--logdir", log, *TINY, "--epochs", "1"])[0] == 0
    kept = tree(log)
    rc, _, err = call(train.main, ["--dataset_path", data, "--logdir", log, *TINY, "--epochs", "1"])
    line = one_error_line(rc, err)
    assert "holds a run" in line and "--resume auto" in line and "--start_over" in line
    assert tree(log) == kept  # its best checkpoint and metrics rows are still there
    rc, out, err = call(train.main, ["--dataset_path", data, "--logdir", log, *TINY, "--epochs", "1",
                                     "--start_over", "--seed", "7"])
    assert rc == 0, err
    assert "--start_over: removed the previous run's" in out and "best_checkpoint.pth" in out
    assert torch.load(log / "last_checkpoint.pth", weights_only=False)["args"]["seed"] == 7
    assert len(open(log / "metrics.csv").read().splitlines()) == 2


def test_a_second_run_is_refused_naming_the_holder_and_a_killed_runs_lock_is_taken_over(world, tmp_path):
    data, log = world["data"], tmp_path / "log"
    first = subprocess.Popen([sys.executable, "train.py", "--dataset_path", str(data), "--logdir", str(log),
                              *TINY, "--epochs", "500"], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1"))
    try:
        deadline = time.monotonic() + 120
        while not (log / LOCK).exists():
            assert first.poll() is None and time.monotonic() < deadline, "the first run never took its lock"
            time.sleep(0.2)
        rc, _, err = call(train.main, ["--dataset_path", data, "--logdir", log, *TINY, "--epochs", "500",
                                       "--resume", "auto"])
        assert f"in use by train.py (pid {first.pid} on " in one_error_line(rc, err)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert (log / LOCK).exists()  # a killed run cannot release it
    rc, out, err = call(train.main, ["--dataset_path", data, "--logdir", log, *TINY, "--epochs", "500",
                                     "--resume", "auto", "--stop_after", "1"])
    assert rc == 0, err
    assert not (log / LOCK).exists()  # released at the end


def test_a_log_folder_from_before_marks_is_recognised_and_resumed(world, tmp_path):
    """Log folders written before folders were marked: train.py's own names and a checkpoint of
    its kind with its run's arguments are adopted (--resume auto continues them); the same
    names around another kind of checkpoint are not."""
    data, log = world["data"], tmp_path / "old"
    argv = ["--dataset_path", data, "--logdir", log, *TINY, "--epochs", "2"]
    assert call(train.main, argv + ["--stop_after", "1"])[0] == 0
    os.unlink(log / MARK)  # as an earlier version left it
    rc, out, err = call(train.main, argv + ["--resume", "auto"])
    assert rc == 0, err
    assert "an earlier train.py run's folder" in out and "resumed from" in out
    assert torch.load(log / "last_checkpoint.pth", weights_only=False)["epoch"] == 2
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(world["cam"], other / "last_checkpoint.pth")
    (other / "config.json").write_text("{}")
    rc, _, err = call(train.main, ["--dataset_path", data, "--logdir", other, *TINY, "--resume", "auto"])
    assert "was not made by train.py" in one_error_line(rc, err)


def test_run_lock_of_a_live_holder_on_this_host(tmp_path):
    with RunLock(str(tmp_path), "train.py"):
        with pytest.raises(OSError, match=f"pid {os.getpid()}"):
            RunLock(str(tmp_path), "train.py").acquire()


READ_ONLY = {  # tool -> argv(world, the read-only folder)
    "train.py": (train.main, lambda w, ro: ["--dataset_path", w["data"], "--logdir", ro, *TINY]),
    "eval.py": (evaluation.main, lambda w, ro: ["--checkpoint_path", w["seg"], "--dataset_path", w["data"],
                                                "--save_path", ro / "eval", *SMALL]),
    "predict.py": (predict.main, lambda w, ro: ["--checkpoint_path", w["seg"], "--images",
                                                w["data"] / "JPEGImages", "--out", ro, *INFER]),
    "make_pseudo_labels.py label": (mpl.main, lambda w, ro: ["label", "--dataset_path", w["data"],
                                                             "--checkpoint_path", w["cam"], "--out", ro]),
    "datasets.score_labels": (score_labels.main, lambda w, ro: ["--root", w["data"], "--labels", "pseudo_label",
                                                                "--json", ro / "s.json"]),
    "datasets.class_labels": (class_labels.main, lambda w, ro: ["--root", w["data"], "--out", ro / "c.json"]),
}


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into a read-only folder (checked by hand on a read-only mount)")
@pytest.mark.parametrize("tool", READ_ONLY)
def test_a_read_only_output_folder_is_one_line(world, tmp_path, tool):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        main, argv = READ_ONLY[tool]
        rc, _, err = call(main, argv(world, ro))
        assert "read-only, or permission denied" in one_error_line(rc, err)
        assert os.listdir(ro) == []
    finally:
        ro.chmod(0o755)


# ----------------------------------------------------------------------------- ids are names
@pytest.mark.parametrize("bad", ["../SegmentationClassAug/{id}", "/abs/{id}", "a\\{id}", "{id}\x00", ".."])
def test_an_id_never_leads_a_write_outside_the_output_folder(world, tmp_path, bad):
    """The audit: an id with '..' made eval.py write its prediction over the very mask it
    read; datasets.check called such a list OK."""
    data, id_ = world["data"], world["val_id"]
    ids = tmp_path / "ids.txt"
    ids.write_text(f"{id_}\n{bad.format(id=id_)}\n")
    before = tree(data)
    rc, _, err = call(evaluation.main, ["--checkpoint_path", world["seg"], "--dataset_path", data,
                                        "--save_path", tmp_path / "out", "--split", ids, "--device", "cpu", *SMALL])
    assert f"ids.txt: line 2: id " in one_error_line(rc, err)
    assert tree(data) == before and not (tmp_path / "out").exists()
    report = check_dataset(str(data), splits=(str(ids),), deep=False)
    assert not report.ok and report.counts() == {"id_list": 1} and "line 2" in report.summary()


@pytest.mark.parametrize("text, ids", [
    (b"\xef\xbb\xbfa\nb", ["a", "b"]),                 # a BOM is not part of the first id
    (b"  a \r\n\n\nb\r\n", ["a", "b"]),               # CRLF, blanks, spaces
    ("café\nnaïve\n".encode(), ["café", "naïve"]),    # UTF-8 names
])
def test_the_id_reader_accepts(tmp_path, text, ids):
    (tmp_path / "l.txt").write_bytes(text)
    assert read_ids(str(tmp_path / "l.txt")) == ids


@pytest.mark.parametrize("text, message", [
    ("a\ncafé\n".encode("latin-1"), "line 2 is not UTF-8 text (byte 0xe9"),
    (b"a\nb\x00c\n", "line 2: id 'b\\x00c' holds the invisible character U+0000"),
    ("a\nb\u00a0c\n".encode(), "U+00A0"),  # a no-break space inside a name
    (b"/etc/passwd\n", "line 1: id '/etc/passwd' is an absolute path"),
    (b"a\n../b\n", "line 2: id '../b' holds a path separator"),
    (b"a\\b\n", "holds a path separator"),
    (b".\n", "is a folder reference"),
    (b"\n\n", "id list is empty"),
])
def test_the_id_reader_refuses_naming_the_line(tmp_path, text, message):
    (tmp_path / "l.txt").write_bytes(text)
    with pytest.raises(DatasetError) as e:
        read_ids(str(tmp_path / "l.txt"))
    assert str(e.value).startswith(str(tmp_path / "l.txt")) and message in str(e.value)


# ----------------------------------------------------------------------------- --device
DEVICE_TOOLS = {
    "train.py": (train.main, lambda w, t: ["--dataset_path", w["data"], "--logdir", t / "out", *TINY]),
    "make_pseudo_labels.py train": (mpl.main, lambda w, t: ["train", "--dataset_path", w["data"], "--logdir", t / "out"]),
    "make_pseudo_labels.py label": (mpl.main, lambda w, t: ["label", "--dataset_path", w["data"],
                                                            "--checkpoint_path", w["cam"], "--out", t / "out"]),
    "eval.py": (evaluation.main, lambda w, t: ["--checkpoint_path", w["seg"], "--dataset_path", w["data"],
                                               "--save_path", t / "out"]),
    "predict.py": (predict.main, lambda w, t: ["--checkpoint_path", w["seg"], "--images", w["data"] / "JPEGImages",
                                               "--out", t / "out"]),
}


@pytest.mark.parametrize("tool", DEVICE_TOOLS)
@pytest.mark.parametrize("device", ["foo", "cuda:", "cpu:0"] + (["cuda", "cuda:0"] if NO_GPU else []))
def test_device_is_checked_once_the_same_way_before_any_folder(world, tmp_path, tool, device):
    main, argv = DEVICE_TOOLS[tool]
    rc, _, err = call(main, argv(world, tmp_path) + ["--device", device])
    line = one_error_line(rc, err)
    assert rc == 2 and f"argument --device: '{device}'" in line
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- checkpoint kinds
def test_a_checkpoint_of_the_wrong_kind_says_what_it_is(world, tmp_path):
    data, cam, seg = world["data"], world["cam"], world["seg"]
    for main, argv in ((evaluation.main, ["--checkpoint_path", cam, "--dataset_path", data,
                                          "--save_path", tmp_path / "e", "--layers", "18", *SMALL]),
                       (predict.main, ["--checkpoint_path", cam, "--images", data / "JPEGImages",
                                       "--out", tmp_path / "p", *INFER])):
        line = one_error_line(*call(main, argv)[::2])
        assert f"{cam}: is a CAM classifier checkpoint (make_pseudo_labels.py train), not a segmentation" in line
        assert "--layers" not in line.split("not a segmentation")[1]  # no advice about flags given
    rc, _, err = call(train.main, ["--dataset_path", data, "--logdir", tmp_path / "t", *TINY, "--epochs", "1",
                                   "--resume", cam])
    line = one_error_line(rc, err)
    assert "is a CAM classifier checkpoint" in line and "train.py --resume needs one from train.py" in line
    assert "--resume_override" not in line
    rc, _, err = call(mpl.main, ["train", "--dataset_path", data, "--logdir", tmp_path / "c", "--layers", "18",
                                 "--pretrained", "none", "--workers", "0", "--batchsize", "2", "--crop_size", "64",
                                 "--resume", seg, "--val_path", "none", "--class_labels", tmp_path / "cl.json"])
    assert "is a segmentation network checkpoint (train.py), not a CAM classifier" in one_error_line(rc, err)


# ----------------------------------------------------------------------------- hostile inputs
def _root_with(tmp, synthetic, files: dict) -> str:
    root = tmp / "root"
    shutil.copytree(synthetic, root)
    for name, data in files.items():
        (root / name).write_bytes(data)
    return str(root)


SPLIT = os.path.join("ImageSets", "SegmentationAug", "train.txt")
# id -> (main, argv(world, tmp, synthetic root), what the error line names); every case: one
# `error:` line, exit != 0, no traceback, nothing written or changed anywhere.
HOSTILE = {
    "yaml latin-1": (class_labels.main, lambda w, t, s: [
        "--root", _root_with(t, s, {"dataset.yaml": "classes: [caf\xe9, b]\n".encode("latin-1")})], "dataset.yaml"),
    "yaml mixed keys": (score_labels.main, lambda w, t, s: [
        "--root", _root_with(t, s, {"dataset.yaml": b"classes: [a, b]\n1: x\n"}), "--labels", "pseudo_label"],
        "unknown key(s) [1]"),
    "yaml ignore_index 0": (class_labels.main, lambda w, t, s: [
        "--root", _root_with(t, s, {"dataset.yaml": b"classes: [a, b, c, d, e, f]\nignore_index: 0\n"})],
        "'ignore_index' 0 is not supported"),
    "id list latin-1": (class_labels.main, lambda w, t, s: [
        "--root", _root_with(t, s, {SPLIT: "train_00000\ncaf\xe9\n".encode("latin-1")})], "line 2 is not UTF-8"),
    "id list NUL": (score_labels.main, lambda w, t, s: [
        "--root", _root_with(t, s, {SPLIT: b"train_00000\x00\n"}), "--labels", "pseudo_label"], "U+0000"),
    "score_labels --json folder": (score_labels.main, lambda w, t, s: [
        "--root", w["data"], "--labels", "pseudo_label", "--json", w["tmp"] / "models"], "--json"),
    "class_labels --out folder": (class_labels.main, lambda w, t, s: [
        "--root", w["data"], "--out", w["tmp"] / "models"], "--out"),
    "label --scales nan": (mpl.main, lambda w, t, s: [
        "label", "--dataset_path", w["data"], "--checkpoint_path", w["cam"], "--out", t / "o", "--scales", "nan"],
        "--scales"),
    "eval --scales nan": (evaluation.main, lambda w, t, s: [
        "--checkpoint_path", w["seg"], "--dataset_path", w["data"], "--save_path", t / "o", "--scales", "nan"],
        "--scales"),
    "simulate --width 99999": (simulate_scribbles.main, lambda w, t, s: [
        "--masks", w["data"] / "SegmentationClassAug", "--out", t / "o", "--seed", "0", "--width", "99999"],
        "--width"),
    "simulate --out the masks": (simulate_scribbles.main, lambda w, t, s: [
        "--masks", w["data"] / "SegmentationClassAug", "--out", w["data"] / "SegmentationClassAug", "--seed", "0",
        "--overwrite"], "input folder"),
    "distance_map --lam inf": (distance_map.main, lambda w, t, s: [
        "--kind", "scribble", "--src", w["data"] / "pascal_2012_scribble", "--dst", t / "o", "--lam", "inf"],
        "--lam"),
    "distance_map --dst the source": (distance_map.main, lambda w, t, s: [
        "--kind", "pseudo", "--src", w["data"] / "pseudo_label", "--dst", w["data"] / "pseudo_label",
        "--overwrite"], "input folder"),
    "eval with a CAM checkpoint": (evaluation.main, lambda w, t, s: [
        "--checkpoint_path", w["cam"], "--dataset_path", w["data"], "--save_path", t / "o", *SMALL],
        "CAM classifier"),
    "predict with a CAM checkpoint": (predict.main, lambda w, t, s: [
        "--checkpoint_path", w["cam"], "--images", w["data"] / "JPEGImages", "--out", t / "o", *INFER],
        "CAM classifier"),
    "label with a segmentation checkpoint": (mpl.main, lambda w, t, s: [
        "label", "--dataset_path", w["data"], "--checkpoint_path", w["seg"], "--out", t / "o", "--device", "cpu"],
        "segmentation network"),
    "train into a folder with a config.json": (train.main, lambda w, t, s: [
        "--dataset_path", w["data"], "--logdir", w["tmp"] / "foreign_log", *TINY], "config.json"),
    "train --resume and --start_over": (train.main, lambda w, t, s: [
        "--dataset_path", w["data"], "--logdir", t / "o", *TINY, "--resume", "auto", "--start_over"],
        "--start_over"),
    "predict --out over the masks": (predict.main, lambda w, t, s: [
        "--checkpoint_path", w["seg"], "--images", w["data"] / "JPEGImages",
        "--out", w["data"] / "SegmentationClassAug", *INFER], "SegmentationClassAug"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_input_is_one_error_line_and_writes_nothing(world, tmp_path, synthetic_root, case):
    main, argv, named = HOSTILE[case]
    (world["tmp"] / "foreign_log").mkdir(exist_ok=True)
    (world["tmp"] / "foreign_log" / "config.json").write_text("{}")
    argv = argv(world, tmp_path, synthetic_root)  # may build a bad root under tmp_path
    before_world, before_tmp = tree(world["tmp"]), tree(tmp_path)
    rc, _, err = call(main, argv)
    assert named in one_error_line(rc, err)
    assert tree(world["tmp"]) == before_world and tree(tmp_path) == before_tmp
    assert not (tmp_path / "o").exists()
