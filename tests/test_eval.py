"""eval.py (SPEC §7): checkpoints (ours and the authors' layout) load strictly and safely, the
outputs (palette PNGs, overlays, report, metrics.json) match what the network predicts, a failed
run leaves no report, torchrun scores each image once, BN folding keeps predictions.

The sliding window, the confusion matrix and the scores have their own tests
(test_inference.py, test_metrics.py); these test eval.py's use of them. Small settings
throughout: ResNet-18, 64x80 images, crop 48 (scale 1.0 needs 2x3 windows, scale 0.5 is padded).
"""
import io
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from conftest import SYNTHETIC_SMALL, corrupt_file, crf_required, require_installed_venv, torchrun
import torch
from PIL import Image

import eval as evaluation
from datasets.layout import CLASSES, IGNORE_INDEX, Layout, read_ids, split_path
from models import build_model
from models.arch import infer_architecture, resolve_architecture
from utils.checkpoint import CheckpointError
from utils.inference import multi_scale_predict, prepare_for_inference
from utils.io import read_image, read_label
from utils.metrics import confusion_matrix
from utils.outputs import claim_output_dir
from utils.palette import voc_palette

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--scales", "0.5", "1.0", "--base_size", "80", "--crop_size", "48", "--workers", "0"]
PROTOCOL = dict(scales=(0.5, 1.0), base_size=80, crop_size=48)
SET_CLASSES = SYNTHETIC_SMALL["num_classes"] + 1  # the synthetic set's dataset.yaml: background + K


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Small convolutions on a busy machine: one thread avoids OpenMP waiting on descheduled ones.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _model(model_type="deeplabv2", layers=18, num_classes=SET_CLASSES, lorm=True, seed=0):
    """A random network whose BN statistics are not the identity (so folding them matters)."""
    torch.manual_seed(seed)
    model = build_model(model_type, layers, num_classes, lorm=lorm)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _as_numpy1_pickle(path):
    """Rewrite a checkpoint as numpy 1.x pickles it (numpy.core.multiarray.*, renamed numpy._core in 2.x)."""
    with zipfile.ZipFile(path) as zin:
        items = [(i, zin.read(i.filename)) for i in zin.infolist()]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zout:
        for info, data in items:
            if info.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            zout.writestr(info, data)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def authors_checkpoint(model, path, prefix="", numpy1=False):
    """What the authors' last_checkpoint.pth holds: their key names (ours), maybe `module.`,
    an int epoch, best_pred as a numpy float64, an SGD optimizer state; no training args."""
    params = list(model.parameters())
    optimizer = {"state": {0: {"momentum_buffer": torch.zeros_like(params[0])}},
                 "param_groups": [{"lr": 1e-3, "momentum": 0.9, "dampening": 0, "weight_decay": 5e-4,
                                   "nesterov": False, "params": list(range(len(params)))}]}
    torch.save({"epoch": 50, "state_dict": {prefix + k: v for k, v in model.state_dict().items()},
                "best_pred": np.float64(0.7392), "optimizer": optimizer}, path)
    if numpy1:
        _as_numpy1_pickle(path)
    return str(path)


def our_checkpoint(model, path, **args):
    numclasses = infer_architecture(model.state_dict())["numclasses"]
    torch.save({"state_dict": model.state_dict(), "epoch": 2, "best_miou": 12.5,
                "args": {"model_type": "deeplabv2", "layers": 18, "numclasses": numclasses, "l_lorm": 1.0,
                         "crop_size": 48, **args}}, path)
    return str(path)


def _run(argv, capsys):
    rc = evaluation.main(argv)
    return rc, capsys.readouterr().err


# ----------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("prefix, numpy1", [("", False), ("module.", False), ("module.", True)])
def test_authors_checkpoint_loads_safely_and_predicts_like_its_network(tmp_path, prefix, numpy1):
    source = _model(num_classes=21)  # VOC's, as the authors' released checkpoint
    path = authors_checkpoint(source, tmp_path / "last_checkpoint.pth", prefix, numpy1)
    # The numpy scalar is why plain weights_only loading fails: the allowlist is exercised.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)

    model, info = evaluation.load_model_from_checkpoint(path)
    assert info["arch"] == {"model_type": "deeplabv2", "layers": 18, "numclasses": 21, "lorm": True}
    assert set(info["source"].values()) == {"checkpoint keys"} and info["epoch"] == 50

    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    got = evaluation.predict(model, image, **PROTOCOL)
    x = evaluation._as_input(image, "cpu")
    want = multi_scale_predict(source, x, scales=(0.5, 1.0), base_size=80, crop=48)[0]
    assert got.shape == (21, 50, 70)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_wrong_depth_names_keys_and_the_flags_to_try(tmp_path, synthetic_root, capsys):
    path = authors_checkpoint(_model(layers=18, num_classes=21), tmp_path / "r18.pth", "module.")
    with pytest.raises(CheckpointError) as e:
        evaluation.load_model_from_checkpoint(path, layers=50)
    msg = str(e.value)
    assert path in msg and "missing keys" in msg and "shape mismatches" in msg
    assert "layer1.0.conv3.weight" in msg  # a bottleneck key R50 wants and R18 lacks
    with pytest.raises(CheckpointError, match=r"(?s)unexpected keys .*layer_pred0\.aspp1.*"
                                              r"look like --model_type deeplabv2"):
        evaluation.load_model_from_checkpoint(path, model_type="deeplabv3p")  # wrong head
    assert "--model_type deeplabv2 --layers 18 --numclasses 21" in msg

    save = tmp_path / "out"
    rc, err = _run(["--checkpoint_path", path, "--dataset_path", synthetic_root, "--layers", "50",
                    "--save_path", str(save)] + SMALL, capsys)
    assert rc == 1 and err.startswith("error: ") and "--layers 18" in err
    assert "Traceback" not in err and not os.path.exists(f"{save}.txt")


def test_untrusted_objects_need_trust_checkpoint(tmp_path):
    import argparse
    path = str(tmp_path / "pickled_args.pth")
    torch.save({"state_dict": _model().state_dict(), "args": argparse.Namespace(layers=18)}, path)
    with pytest.raises(CheckpointError, match="--trust_checkpoint"):
        evaluation.load_model_from_checkpoint(path)
    with pytest.warns(UserWarning, match="weights_only=False"):
        model, info = evaluation.load_model_from_checkpoint(path, trust=True)
    assert info["arch"]["layers"] == 18 and not model.training


def test_checkpoint_advice_fits_the_problem(tmp_path):
    import argparse
    from utils.checkpoint import load_checkpoint
    unsafe = str(tmp_path / "pickled_args.pth")
    torch.save({"state_dict": {}, "args": argparse.Namespace(layers=18)}, unsafe)
    truncated = str(tmp_path / "truncated.pth")
    torch.save({"state_dict": _model().state_dict()}, truncated)
    with open(truncated, "r+b") as f:
        f.truncate(os.path.getsize(truncated) // 2)
    # a caller without the flag (train.py's resume) never advises it
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(unsafe)
    assert "weights_only" in str(e.value) and "--trust_checkpoint" not in str(e.value)
    # a truncated file is called that; trusting it cannot help, so no advice even with the flag
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(truncated, trust_flag="--trust_checkpoint")
    assert "truncated" in str(e.value) and "--trust_checkpoint" not in str(e.value)
    with pytest.raises(CheckpointError, match="truncated"):
        evaluation.load_model_from_checkpoint(truncated)


def test_architecture_precedence_flags_args_keys():
    v3p = _model("deeplabv3p", layers=34, num_classes=5, lorm=False)
    assert infer_architecture({"module." + k: v for k, v in v3p.state_dict().items()}) == \
        {"model_type": "deeplabv3p", "layers": 34, "numclasses": 5, "lorm": False}
    ckpt = {"state_dict": v3p.state_dict(), "args": {"layers": 101, "model_type": "deeplabv3p"}}
    arch, source = resolve_architecture(ckpt, numclasses=7)
    assert arch == {"model_type": "deeplabv3p", "layers": 101, "numclasses": 7, "lorm": False}
    assert source == {"model_type": "checkpoint args", "layers": "checkpoint args",
                      "numclasses": "flag", "lorm": "checkpoint keys"}
    arch, source = resolve_architecture({"state_dict": {"x": torch.zeros(1)}})
    assert arch["model_type"] == "deeplabv2" and arch["layers"] == 50 and source["layers"] == "default"


@pytest.mark.parametrize("model_type", ["deeplabv2", "deeplabv3p"])
def test_prepare_for_inference_folds_every_bn_and_keeps_outputs(model_type):
    model = _model(model_type, lorm=False)
    x = torch.randn(2, 3, 40, 56, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model(x)["out"]
        prepared = prepare_for_inference(model)
        got = prepared(x)["out"]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in prepared.modules())
    assert not prepared.training
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


# ----------------------------------------------------------------------------- eval.py runs
def _score_files(save, root, ids, num_classes=SET_CLASSES):
    layout = Layout(str(root))
    total = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for id_ in ids:
        pred = read_label(os.path.join(save, f"{id_}.png"))
        mask = read_label(layout.path("mask", id_))
        total += confusion_matrix(torch.tensor(pred), torch.tensor(mask), num_classes, IGNORE_INDEX)
    return total


def test_eval_writes_palette_pngs_overlays_and_a_consistent_report(tmp_path, make_synthetic, capsys):
    # VOC's 21 classes (K=20) in 3 val images: most are absent, and the report must say n/a for them
    synthetic_root = make_synthetic(num_classes=20)
    source = _model(num_classes=21)
    path = our_checkpoint(source, tmp_path / "ours.pth")
    save = str(tmp_path / "eval" / "run")
    rc, err = _run(["--checkpoint_path", path, "--dataset_path", synthetic_root, "--save_path", save,
                    "--overlay", "--stride_rate", "2/3", "--list", "val"] + SMALL, capsys)
    assert rc == 0, err
    ids = read_ids(split_path(synthetic_root, "val"))
    layout = Layout(str(synthetic_root))
    model, _ = evaluation.load_model_from_checkpoint(path)
    for id_ in ids:
        with Image.open(os.path.join(save, f"{id_}.png")) as im:
            assert im.mode == "P"
            assert np.array_equal(np.asarray(im.getpalette()).reshape(-1, 3)[:256], voc_palette())
            saved = np.asarray(im)
        image = read_image(layout.path("image", id_))
        want = evaluation.predict(model, image, **PROTOCOL).argmax(0).numpy()
        assert saved.shape == image.shape[:2] and np.array_equal(saved, want)
        with Image.open(os.path.join(save, "overlay", f"{id_}.png")) as im:
            overlay = np.asarray(im)
        h, w = image.shape[:2]
        assert overlay.shape == (h, 3 * w + 8, 3) and np.array_equal(overlay[:, :w], image)

    metrics = json.load(open(os.path.join(save, "metrics.json")))
    conf = torch.tensor(metrics["confusion_matrix"])
    assert torch.equal(conf, _score_files(save, synthetic_root, ids, 21))  # each image once
    assert metrics["images"] == len(ids) and metrics["architecture"]["layers"] == 18
    assert metrics["protocol"]["scales"] == [0.5, 1.0] and metrics["protocol"]["stride_rate"] == 2 / 3
    absent = [c for c in range(21) if conf[c].sum() == 0 and conf[:, c].sum() == 0]
    assert absent and all(metrics["iou"][CLASSES[c]] is None for c in absent)
    present = [v for v in metrics["iou"].values() if v is not None]
    assert metrics["miou"] == pytest.approx(np.mean(present))

    lines = open(save + ".txt").read().splitlines()
    assert lines[0] == f" * IOU_All {metrics['miou']}"
    assert lines[1].startswith(" * IOU_Ind [") and lines[1].count("nan") == len(absent)
    assert lines[2] == f" * ACC_Pix {metrics['pixel_acc']}"
    assert any(line.startswith("mIoU: ") for line in lines)
    for picture in ("iou_per_class.png", "confusion_matrix.png"):
        with Image.open(os.path.join(save, picture)) as im:
            assert im.size[0] > 100
    assert not [f for f in os.listdir(save) if ".tmp" in f]


def test_a_failed_run_leaves_no_report(tmp_path, synthetic_root, capsys):
    root = str(tmp_path / "data")
    shutil.copytree(synthetic_root, root)
    path = our_checkpoint(_model(), tmp_path / "ours.pth")
    save = str(tmp_path / "run")
    assert _run(["--checkpoint_path", path, "--dataset_path", root, "--save_path", save] + SMALL,
                capsys)[0] == 0
    assert os.path.isfile(save + ".txt")
    # a later run over the same save_path dies on its last image
    ids = read_ids(split_path(root, "val"))
    bad = Layout(root).path("image", ids[-1])
    with open(bad, "r+b") as f:
        f.truncate(40)
    rc, err = _run(["--checkpoint_path", path, "--dataset_path", root, "--save_path", save,
                    "--no_check"] + SMALL, capsys)
    assert rc == 1 and bad in err and "Traceback" not in err
    assert not os.path.exists(save + ".txt")  # the previous report is gone, no new one
    assert not os.path.exists(os.path.join(save, "metrics.json"))
    assert os.path.isfile(os.path.join(save, evaluation.UNFINISHED))  # the folder says it may mix runs


def test_never_deletes_or_overwrites_files_it_did_not_write(tmp_path, synthetic_root, capsys):
    root = str(tmp_path / "data")
    shutil.copytree(synthetic_root, root)
    path = our_checkpoint(_model(), tmp_path / "ours.pth")
    val_txt = split_path(root, "val")
    before = open(val_txt).read()
    # the case: --save_path <root>/ImageSets/SegmentationAug/val would delete val.txt
    rc, err = _run(["--checkpoint_path", path, "--dataset_path", root,
                    "--save_path", os.path.splitext(val_txt)[0]] + SMALL, capsys)
    assert rc == 1 and "inside the dataset root" in err and "Traceback" not in err
    assert open(val_txt).read() == before
    # outside the dataset, a <save_path>.txt that is not our report is not replaced
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    rc, err = _run(["--checkpoint_path", path, "--dataset_path", root, "--save_path",
                    str(tmp_path / "notes")] + SMALL, capsys)
    assert rc == 1 and str(notes) in err and "was not written by eval.py" in err
    assert notes.read_text() == "my notes\n" and not (tmp_path / "notes").exists()
    # our own report is replaced, and a finished run leaves no UNFINISHED marker
    save = str(tmp_path / "run")
    for _ in range(2):
        assert _run(["--checkpoint_path", path, "--dataset_path", root, "--save_path", save] + SMALL,
                    capsys)[0] == 0
    assert open(save + ".txt").read().startswith(evaluation.REPORT_HEAD)
    assert not os.path.exists(os.path.join(save, evaluation.UNFINISHED))


def test_save_path_under_a_file_and_stale_temps(tmp_path, synthetic_root, capsys):
    path = our_checkpoint(_model(), tmp_path / "ours.pth")
    (tmp_path / "f").write_text("mine")
    rc, err = _run(["--checkpoint_path", path, "--dataset_path", synthetic_root, "--save_path",
                    str(tmp_path / "f" / "run")] + SMALL, capsys)
    assert rc == 1 and err.strip().count("\n") == 0 and "lies under the file" in err
    assert (tmp_path / "f").read_text() == "mine"
    # what a killed run leaves in its folder: temp files of a prediction and of the report,
    # beside a stranger's
    save = tmp_path / "run"
    claim_output_dir(str(save), evaluation.EVAL_TOOL)
    left = [save / ".2000_000010.k2x_9qaz.tmp.png", tmp_path / ".run.0a1b2c3d.tmp.txt"]
    kept = [tmp_path / ".other.0a1b2c3d.tmp.txt", save / "mine.tmp"]
    for f in left + kept:
        f.write_text("x")
    assert _run(["--checkpoint_path", path, "--dataset_path", synthetic_root, "--save_path",
                 str(save)] + SMALL, capsys)[0] == 0
    assert not any(f.exists() for f in left) and all(f.exists() for f in kept)


def test_out_of_memory_names_the_image_and_the_settings_and_leaves_no_report(tmp_path, synthetic_root, capsys,
                                                                              monkeypatch):
    from test_cli import real_allocation_failures
    path = our_checkpoint(_model(), tmp_path / "ours.pth")
    first = read_ids(split_path(synthetic_root, "val"))[0]
    for e in real_allocation_failures():  # torch's CPU allocator, numpy, OpenCV
        def fail(*a, **k):
            raise e
        monkeypatch.setattr(evaluation, "predict_label", fail)
        save = str(tmp_path / "run")
        rc, err = _run(["--checkpoint_path", path, "--dataset_path", synthetic_root, "--save_path", save]
                       + SMALL, capsys)
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert rc == 1 and len(lines) == 1 and "Traceback" not in err, err
        assert lines[0].startswith(f"error: out of memory on image {first} (could not allocate ")
        assert lines[0].endswith("); lower --base_size, --scales or --crop_batch")
        assert not os.path.exists(save + ".txt")


def test_labels_are_predict_argmax_and_memory_is_bounded_beyond_small_images(monkeypatch):
    """predict_label is predict(...).argmax(0) (uint8); an image whose probabilities exceed the
    bound takes the banded way, with the same labels."""
    import utils.inference as inference
    model = prepare_for_inference(_model(num_classes=5))
    image = np.random.default_rng(0).integers(0, 256, (61, 83, 3), dtype=np.uint8)
    want = evaluation.predict(model, image, **PROTOCOL).argmax(0)
    assert torch.equal(evaluation.predict_label(model, image, **PROTOCOL).long(), want)
    monkeypatch.setattr(inference, "LABEL_WORK_BYTES", 20_000)
    bands = []
    monkeypatch.setattr(inference, "_band_means", lambda *a, f=inference._band_means: bands.append(a) or f(*a))
    got = evaluation.predict_label(model, image, **PROTOCOL)
    assert bands and got.dtype == torch.uint8 and torch.equal(got.long(), want)


def test_scales_that_shrink_the_image_to_nothing_are_refused(capsys):
    with pytest.raises(SystemExit) as e:
        evaluation.parse_args(["--checkpoint_path", "x", "--base_size", "80", "--scales", "0.001", "1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--scales 0.001" in err and "0 px" in err and "0.00625" in err
    assert evaluation.parse_args(["--checkpoint_path", "x", "--base_size", "80", "--scales", "0.00625"]).scales == [0.00625]


def test_torchrun_bad_image_on_one_rank_ends_every_rank(tmp_path, make_synthetic):
    root = make_synthetic()
    path = our_checkpoint(_model(), tmp_path / "ours.pth")
    bad = Layout(root).path("image", read_ids(split_path(root, "val"))[1])  # ShardSampler: rank 1
    corrupt_file(bad)
    save = str(tmp_path / "run")
    proc, seconds = torchrun("eval.py", ["--checkpoint_path", path, "--dataset_path", str(root),
                                         "--save_path", save, "--no_check", "--device", "cpu"] + SMALL,
                             timeout=240)
    assert proc.returncode != 0 and seconds < 90, proc.stderr[-3000:]
    assert (proc.stdout + proc.stderr).count(bad) == 1, proc.stderr[-3000:]
    assert not os.path.exists(save + ".txt")


def _require_densecrf():
    """pydensecrf2 (requirements-crf.txt), which scripts/test.sh builds into .venv. Without it the
    CRF tests skip, except under CI=true or CDSP_REQUIRE_CRF=1 (as in scripts/env.sh): they fail."""
    if crf_required():
        import pydensecrf.densecrf  # noqa: F401
    else:
        pytest.importorskip("pydensecrf.densecrf", reason="pydensecrf2 is not installed: "
                            "pip install -r requirements-crf.txt (needs a C++ compiler)")


def test_crf_flag(tmp_path, synthetic_root, capsys):
    _require_densecrf()
    path = our_checkpoint(_model(), tmp_path / "ours.pth")
    argv = ["--checkpoint_path", path, "--dataset_path", synthetic_root,
            "--save_path", str(tmp_path / "crf"), "--crf"] + SMALL[:-1] + ["1"]  # one CRF process
    rc, err = _run(argv, capsys)
    assert rc == 0, err
    metrics = json.load(open(tmp_path / "crf" / "metrics.json"))
    assert metrics["protocol"]["crf"] and "without_crf" in metrics
    assert os.path.exists(tmp_path / "crf.txt")


def test_crf_flag_without_pydensecrf_exits_with_the_install_hint(tmp_path, synthetic_root, capsys,
                                                                 monkeypatch):
    # Hidden whether or not it is installed: a None entry makes `import pydensecrf...` fail.
    for name in ("pydensecrf", "pydensecrf.densecrf", "pydensecrf.utils", "pydensecrf.eigen"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError):
        import pydensecrf.densecrf  # noqa: F401
    path = our_checkpoint(_model(), tmp_path / "ours.pth")
    rc, err = _run(["--checkpoint_path", path, "--dataset_path", synthetic_root,
                    "--save_path", str(tmp_path / "crf"), "--crf"] + SMALL, capsys)
    assert rc == 1 and "pip install pydensecrf2==1.1" in err and "C++ compiler" in err
    assert not os.path.exists(tmp_path / "crf.txt")
    assert not os.path.exists(tmp_path / "crf" / "metrics.json")


def test_dense_crf_snaps_noisy_probabilities_to_an_image_edge():
    _require_densecrf()
    from utils.crf import ParallelCRF, crf_label
    rng = np.random.default_rng(0)
    image = np.full((40, 60, 3), 30, np.uint8)
    image[:, 30:] = 220                                  # an edge at x = 30
    truth = np.zeros((40, 60), np.int64)
    truth[:, 30:] = 1
    probs = np.full((2, 40, 60), 0.5, np.float32)
    probs[1] += np.where(truth == 1, 0.1, -0.1) + rng.normal(0, 0.15, (40, 60))  # weak, noisy
    probs[1] = probs[1].clip(0.01, 0.99)
    probs[0] = 1 - probs[1]
    raw = (probs.argmax(0) == truth).mean()
    crf = ParallelCRF(processes=1)
    crf.submit("a", image, probs)
    crf.submit("b", image, probs[::-1].copy())
    (ka, la), (kb, lb) = crf.ready() + crf.close()
    assert (ka, kb) == ("a", "b") and np.array_equal(la, crf_label(image, probs))
    assert raw < 0.8 and (la == truth).mean() > 0.98 and (lb == 1 - truth).mean() > 0.98


def test_cli_flags():
    args = evaluation.parse_args(["--checkpoint_path", "x", "--stride_rate", "1/2", "--list", "a.txt",
                                  "--model_type", "deeplabv2_lorm"])
    assert args.stride_rate == 0.5 and args.split == "a.txt" and args.scales == [0.5, 0.75, 1.0, 1.25,
                                                                                     1.5, 1.75, 2.0]
    assert (args.base_size, args.crop_size, args.flip) == (None, None, False)  # from the checkpoint
    # sizes left unset: the checkpoint's training crop and each image's own size; without
    # training args (the authors' checkpoint) the paper's 512 / 465
    ours, authors = evaluation.parse_args(["--checkpoint_path", "x"]), evaluation.parse_args(["--checkpoint_path", "x"])
    evaluation.resolve_sizes(ours, {"args": {"crop_size": 129}})
    evaluation.resolve_sizes(authors, {"args": {}})
    assert (ours.base_size, ours.crop_size) == (None, 129) and (authors.base_size, authors.crop_size) == (512, 465)
    given = evaluation.parse_args(["--checkpoint_path", "x", "--base_size", "300", "--crop_size", "97"])
    evaluation.resolve_sizes(given, {"args": {"crop_size": 129}})
    assert (given.base_size, given.crop_size) == (300, 97)
    for bad in (["--stride_rate", "3/2"], ["--crop_size", "0"], ["--checkpoint"], ["--scales", "-1"]):
        with pytest.raises(SystemExit) as e:
            evaluation.parse_args(["--checkpoint_path", "x"] + bad)
        assert e.value.code == 2


# ----------------------------------------------------------------------------- torchrun
def test_torchrun_two_processes_score_each_image_once(tmp_path, synthetic_root):
    path = our_checkpoint(_model(), tmp_path / "ours.pth")
    save = str(tmp_path / "ddp")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    with socket.socket() as s:  # a free port: other test runs may use torchrun at the same time
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(port), os.path.join(REPO, "eval.py"),
           "--checkpoint_path", path, "--dataset_path", synthetic_root, "--save_path", save,
           "--device", "cpu"] + SMALL
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = read_ids(split_path(synthetic_root, "val"))
    metrics = json.load(open(os.path.join(save, "metrics.json")))
    assert metrics["world_size"] == 2
    assert torch.equal(torch.tensor(metrics["confusion_matrix"]), _score_files(save, synthetic_root, ids))
    assert proc.stdout.count(" * IOU_All") == 1  # rank 0 alone reports


def test_emlc_script_defaults_and_overrides(tmp_path, make_synthetic):
    require_installed_venv()
    script = os.path.join(REPO, "scripts", "emlc_r50_deeplabv2.sh")
    text = open(script).read()
    assert "log/train_deeplabv2_r50/last_checkpoint.pth" in text and "SAVE_PATH:-emlc_r50_deeplabv2}" in text
    synthetic_root = make_synthetic(num_classes=20)  # VOC's 21 classes, as the script's --numclasses
    path = our_checkpoint(_model(num_classes=21), tmp_path / "ours.pth")
    save = str(tmp_path / "emlc")
    env = dict(os.environ, CHECKPOINT=path, DATA=str(synthetic_root), SAVE_PATH=save, OMP_NUM_THREADS="1")
    # the script's R50 flags, overridden by extra arguments for this tiny R18 checkpoint
    proc = subprocess.run(["sh", script, "--layers", "18", "--device", "cpu"] + SMALL, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.isfile(save + ".txt")
    assert len([f for f in os.listdir(save) if f.startswith("val_")]) == 3
