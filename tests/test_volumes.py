"""Whole-volume scoring (datasets/volumes.py) in datasets.score_labels and eval.py: the volume
index, stacking slices by case, 3-D Dice / HD95 equal to medpy's on the stacked volumes, in mm
when the index has the spacing; the dataset's mean / std in evaluation."""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch
from medpy.metric import binary

import eval as evaluation
from datasets.import_volumes import import_volumes, NiftiSource
from datasets.layout import DatasetError
from datasets.meta import load_meta
from datasets.score_labels import main as score_main, score_labels
from datasets.volumes import Case, cases_of, read_index, write_index
from models import build_model
from test_import_volumes import _nifti, _volume
from utils.io import read_label, save_png


def test_index_round_trip_and_errors(tmp_path):
    path = str(tmp_path / "volumes.csv")
    write_index(path, [("a_1", "a", 1, (5.0, 1.5, 1.5)), ("a_0", "a", 0, (5.0, 1.5, 1.5)), ("b_0", "b", 0, None)])
    idx = read_index(path)
    assert idx["a"] == Case("a", ("a_0", "a_1"), (5.0, 1.5, 1.5)) and idx["b"].spacing is None  # slice order
    (tmp_path / "bad.csv").write_text("id,case,slice,spacing_z,spacing_y,spacing_x\nx,a,one,,,\n")
    with pytest.raises(DatasetError, match="bad.csv, line 2"):
        read_index(str(tmp_path / "bad.csv"))
    (tmp_path / "twice.csv").write_text("id,case,slice,spacing_z,spacing_y,spacing_x\nx,a,0,,,\ny,a,0,,,\n")
    with pytest.raises(DatasetError, match="slice position twice"):
        read_index(str(tmp_path / "twice.csv"))


@pytest.fixture(scope="module")
def acdc_like(tmp_path_factory):
    """An imported NIfTI set: 4 cases of 3 slices, spacing (8, 1.5, 1.25), 2 folds (val: 2 cases)."""
    tmp = tmp_path_factory.mktemp("vols")
    rng = np.random.default_rng(5)
    src = tmp / "nifti"
    src.mkdir()
    for case in ("c1", "c2", "c3", "c4"):
        image, label, scribble = _volume(rng, z=3, h=40, w=44)
        label[1:, 30:34, 30:34] = 1  # a second RV component off-centre, so distances are not trivial
        _nifti(src / f"{case}.nii.gz", (image * 1000).astype(np.int16))
        _nifti(src / f"{case}_gt.nii.gz", label)
        _nifti(src / f"{case}_scr.nii.gz", scribble.astype(np.uint8))
    root = tmp / "ds"
    import_volumes(NiftiSource(str(src), "{case}.nii.gz", "{case}_gt.nii.gz", "{case}_scr.nii.gz"), str(root),
                   ["background", "RV", "Myo", "LV"], folds=2, fold=1, unlabelled=4, progress=False)
    return root


def _noisy_prediction(root, folder, seed=0):
    """A copy of the val masks with blobs moved and a structure dropped from one volume."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    out = {}
    for case in read_index(str(root / "volumes.csv")).values():
        for i in case.ids:
            m = read_label(str(root / "SegmentationClassAug" / f"{i}.png")).copy()
            m = np.roll(m, int(rng.integers(-2, 3)), axis=1)
            if case.name == "c2":
                m[m == 3] = 2
            m[rng.random(m.shape) > 0.995] = 1
            save_png(m, os.path.join(folder, f"{i}.png"))
            out[i] = m
    return out


def test_score_labels_scores_whole_volumes_in_mm_equal_to_medpy(acdc_like, tmp_path, capsys):
    pred = _noisy_prediction(acdc_like, str(tmp_path / "pred"))
    s = score_labels(str(acdc_like), str(tmp_path / "pred"), "train", csv_path=str(tmp_path / "cases.csv"))
    train_cases = cases_of(str(acdc_like), [i for i in open(acdc_like / "ImageSets/SegmentationAug/train.txt").read().split()])
    assert [c.name for c in train_cases] == ["c3", "c4"] and s["cases"]["cases"] == 2 and s["cases"]["unit"] == "mm"
    rows = list(csv.DictReader(open(tmp_path / "cases.csv")))
    for case in train_cases:
        p = np.stack([pred[i] for i in case.ids])
        t = np.stack([read_label(str(acdc_like / "SegmentationClassAug" / f"{i}.png")) for i in case.ids])
        for c, name in ((1, "RV"), (2, "Myo"), (3, "LV")):
            row = next(r for r in rows if r["case"] == case.name and r["class"] == name)
            assert float(row["dice"]) == pytest.approx(binary.dc(p == c, t == c), abs=1e-6)
            assert float(row["hd95"]) == pytest.approx(binary.hd95(p == c, t == c, (8.0, 1.5, 1.25)), rel=1e-5)
    assert s["cases"]["dice"]["LV"]["n"] == 2
    # the per-case table in the CLI's report; a split that cuts a volume is refused
    assert score_main(["--root", str(acdc_like), "--labels", str(tmp_path / "pred"), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "HD95 (mm)" in out and "LV: 1 missed" in out  # c2's LV was never predicted
    (tmp_path / "part.txt").write_text("c1_slice_0\nc1_slice_1\n")
    assert score_main(["--root", str(acdc_like), "--labels", str(tmp_path / "pred"), "--split",
                       str(tmp_path / "part.txt")]) == 1
    assert "lists 2 of the 3 slices of c1" in capsys.readouterr().err


def test_eval_scores_volumes_from_its_predictions_with_the_dataset_normalisation(acdc_like, tmp_path, capsys):
    meta = load_meta(str(acdc_like))
    assert meta.mean != (0.485, 0.456, 0.406)  # the imported set's own
    torch.manual_seed(0)
    model = build_model("deeplabv2", 18, 4, lorm=False).eval()
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"state_dict": model.state_dict(), "epoch": 1,
                "args": {"model_type": "deeplabv2", "layers": 18, "numclasses": 4, "l_lorm": 0.0, "crop_size": 33},
                "dataset_meta": meta.to_dict()}, ckpt)
    save = tmp_path / "eval"
    assert evaluation.main(["--checkpoint_path", str(ckpt), "--dataset_path", str(acdc_like), "--save_path", str(save),
                            "--scales", "1.0", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "--crop_size 33 (its training crop)" in out and "Dice (%)" in out and "HD95 (mm)" in out
    metrics = json.loads((save / "metrics.json").read_text())
    assert metrics["protocol"]["crop_size"] == 33 and metrics["protocol"]["base_size"] is None
    # the same numbers as score_labels over eval's own predictions
    s = score_labels(str(acdc_like), str(save), "val")
    for name in ("RV", "Myo", "LV"):
        assert metrics["cases"]["dice"][name]["mean"] == pytest.approx(s["cases"]["dice"][name]["mean"])
    assert (save / "cases.csv").is_file() and "per-case scores" in (tmp_path / "eval.txt").read_text()
    # a prediction: the image normalised with the dataset's mean / std, own size, 33 windows
    from utils.inference import multi_scale_predict
    from utils.io import read_image
    image = read_image(str(acdc_like / "JPEGImages" / "c1_slice_1.png"))
    x = (torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255 - torch.tensor(meta.mean)[:, None, None]) \
        / torch.tensor(meta.std)[:, None, None]
    want = multi_scale_predict(model, x[None], scales=(1.0,), base_size=44, crop=33)[0].argmax(0)
    np.testing.assert_array_equal(read_label(str(save / "c1_slice_1.png")), want.numpy())


def test_torchrun_eval_shares_the_case_scoring_and_writes_the_same_table(acdc_like, tmp_path):
    """Under torchrun the volumes are scored in shares, one per rank (so none idles in the exit
    barrier while rank 0 scores them all), and the rows gathered in case order: the same cases.csv
    as one process."""
    import socket
    import subprocess
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    meta = load_meta(str(acdc_like))
    torch.manual_seed(1)
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"state_dict": build_model("deeplabv2", 18, 4, lorm=False).state_dict(), "epoch": 1,
                "args": {"model_type": "deeplabv2", "layers": 18, "numclasses": 4, "l_lorm": 0.0, "crop_size": 33},
                "dataset_meta": meta.to_dict()}, ckpt)
    flags = ["--checkpoint_path", str(ckpt), "--dataset_path", str(acdc_like), "--scales", "1.0", "--workers", "0",
             "--device", "cpu"]
    assert evaluation.main(flags + ["--save_path", str(tmp_path / "one")]) == 0
    with socket.socket() as s:  # a free port: other test runs may use torchrun at the same time
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), os.path.join(repo, "eval.py"), *flags, "--save_path", str(tmp_path / "two")]
    proc = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=repo), cwd=repo,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("per-case scores") == 1  # rank 0 alone reports
    one, two = ((tmp_path / d / "cases.csv").read_text() for d in ("one", "two"))
    assert two == one and len(list(csv.reader(one.splitlines()))) == 1 + 2 * 3  # 2 val volumes x 3 structures
