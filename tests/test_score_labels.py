"""datasets/score_labels.py on hand-made 8x10 masks / labels with hand-computed scores."""
import json
import math
import os

import numpy as np
import pytest

from datasets.layout import PSEUDO_SYNTHETIC, DatasetError
from datasets.score_labels import main, score_labels
from utils.io import save_png


def _write(root, split_ids, folder, maps):
    (root / "ImageSets" / "SegmentationAug").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "SegmentationAug" / "train.txt").write_text("\n".join(split_ids))
    for id_, arr in maps.items():
        save_png(arr, str(root / folder / f"{id_}.png"), palette=folder == "SegmentationClassAug")


def _halves(split_col):
    a = np.zeros((8, 10), np.uint8)
    a[:, split_col:] = 1
    return a


@pytest.fixture
def two_class(tmp_path):
    # GT: columns 0-4 background, 5-9 class 1 (40 px each); labels move the border to column 4.
    _write(tmp_path, ["a"], "SegmentationClassAug", {"a": _halves(5)})
    _write(tmp_path, ["a"], "pl", {"a": _halves(4)})
    return tmp_path


def test_hand_computed_two_classes(two_class):
    s = score_labels(str(two_class), "pl")
    # class 0: TP 32, GT 40, predicted 32; class 1: TP 40, GT 40, predicted 48
    assert s["iou"][0] == pytest.approx(32 / 40)
    assert s["iou"][1] == pytest.approx(40 / 48)
    assert s["precision"][:2] == pytest.approx([1.0, 40 / 48])
    assert s["recall"][:2] == pytest.approx([32 / 40, 1.0])
    assert s["miou"] == pytest.approx((32 / 40 + 40 / 48) / 2)
    assert s["pixel_acc"] == pytest.approx(72 / 80)
    assert s["unlabelled_fraction"] == 0
    assert all(math.isnan(v) for v in s["iou"][2:])  # absent classes leave the mean
    assert s["confusion"][0][:2] == [32, 8] and s["confusion"][1][:2] == [0, 40]


def test_unlabelled_scored_as_background(tmp_path, capsys):
    gt = np.ones((8, 10), np.uint8)
    gt[0] = 255                       # ignored row: its 255 labels are not counted
    lab = np.ones((8, 10), np.uint8)
    lab[:2] = 255                     # row 1: 10 of the 70 scored pixels left unlabelled
    _write(tmp_path, ["b"], "SegmentationClassAug", {"b": gt})
    _write(tmp_path, ["b"], "pl", {"b": lab})
    s = score_labels(str(tmp_path), "pl")
    assert s["unlabelled_fraction"] == pytest.approx(10 / 70)
    assert s["iou"][0] == 0 and s["precision"][0] == 0 and math.isnan(s["recall"][0])
    assert s["iou"][1] == pytest.approx(60 / 70) and s["precision"][1] == 1
    assert s["miou"] == pytest.approx(3 / 7)
    assert s["pixel_acc"] == pytest.approx(60 / 70)
    out_json = tmp_path / "s.json"
    assert main(["--root", str(tmp_path), "--labels", "pl", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "mIoU: 42.86" in out
    assert "14.29 % of ground-truth pixels" in out and "scored as background" in out
    data = json.loads(out_json.read_text())
    assert data["miou"] == pytest.approx(3 / 7) and data["recall"][0] is None
    assert data["unlabelled_fraction"] == pytest.approx(10 / 70) and "background" in data["note"]


def test_perfect_folder_and_path_name(tmp_path, capsys):
    gt = _halves(3)
    gt[:, 6:] = 15
    gt[:, 3] = 255
    _write(tmp_path, ["c", "d"], "SegmentationClassAug", {"c": gt, "d": _halves(7)})
    other = tmp_path / "elsewhere"
    _write(tmp_path, ["c", "d"], "elsewhere/copy", {"c": gt, "d": _halves(7)})
    s = score_labels(str(tmp_path / "nothere"), str(other / "copy"), split=str(
        tmp_path / "ImageSets" / "SegmentationAug" / "train.txt"), mask_folder=str(tmp_path / "SegmentationClassAug"))
    assert s["miou"] == 1 and s["pixel_acc"] == 1 and s["images"] == 2 and s["unlabelled_fraction"] == 0
    assert [i for i, v in enumerate(s["iou"]) if not math.isnan(v)] == [0, 1, 15]
    assert main(["--root", str(tmp_path), "--labels", "elsewhere/copy"]) == 0
    assert "mIoU: 100.00" in capsys.readouterr().out


def test_errors_name_the_file(two_class, capsys):
    lab = two_class / "pl" / "a.png"
    save_png(np.zeros((8, 11), np.uint8), str(lab))
    with pytest.raises(DatasetError, match=r"a\.png.*size.*differs"):
        score_labels(str(two_class), "pl")
    assert main(["--root", str(two_class), "--labels", "pl"]) == 1
    assert "pl/a.png" in capsys.readouterr().err
    bad = _halves(4)
    bad[0, 0] = 30
    save_png(bad, str(lab))
    with pytest.raises(DatasetError, match=r"a\.png.*30"):
        score_labels(str(two_class), "pl")
    os.remove(lab)
    assert main(["--root", str(two_class), "--labels", "pl", "--json", str(two_class / "x.json")]) == 1
    err = capsys.readouterr().err
    assert "a.png" in err and "not found" in err and "Traceback" not in err
    assert not (two_class / "x.json").exists()
    assert main(["--root", str(two_class), "--labels", "nope"]) == 1
    assert "nope" in capsys.readouterr().err


def test_synthetic_pseudo_labels(synthetic_root, capsys):
    assert main(["--root", str(synthetic_root), "--labels", PSEUDO_SYNTHETIC]) == 0
    out = capsys.readouterr().out
    miou = float(next(line for line in out.splitlines() if line.startswith("mIoU:")).split()[1])
    assert 50 <= miou <= 95
    s = score_labels(str(synthetic_root), PSEUDO_SYNTHETIC)
    assert s["images"] == 6 and 0 < s["unlabelled_fraction"] < 0.2


def test_json_that_is_a_folder_an_input_or_someone_elses_is_one_line(two_class, capsys):
    """--json onto a folder was a traceback after the whole scoring; another file was replaced."""
    (two_class / "notes.json").write_text('{"mine": 1}')
    for target, message in ((two_class / "pl", "is a folder"), (two_class / "pl" / "s.json", "input folder"),
                            (two_class / "notes.json", "was not written by datasets.score_labels")):
        assert main(["--root", str(two_class), "--labels", "pl", "--json", str(target)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: --json {target}") and message in err, err
    assert (two_class / "notes.json").read_text() == '{"mine": 1}'
    ours = two_class / "s.json"
    for _ in range(2):  # its own file is replaced
        assert main(["--root", str(two_class), "--labels", "pl", "--json", str(ours)]) == 0
