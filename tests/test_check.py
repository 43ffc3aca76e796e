"""Dataset checker (SPEC §1), datasets/check.py."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from datasets.check import Problem, check_dataset, check_split, main, require_dataset
from datasets.layout import DatasetError, Layout

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN, VAL = ("t1", "t2", "t3"), ("v1", "v2")


def png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_root(tmp_path, h=12, w=16, pseudo="bmp"):
    """A tiny clean dataset in the ScribbleSup layout."""
    root = tmp_path / "VOC2012"
    rng = np.random.default_rng(0)
    lists = root / "ImageSets" / "SegmentationAug"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("\n".join(TRAIN))          # no trailing newline
    (lists / "val.txt").write_text("\n".join(VAL) + "\n\n")      # blank lines
    label = np.full((h, w), 255, np.uint8)
    label[3, 2:9] = 12
    label[8, 1:5] = 0
    for id_ in TRAIN + VAL:
        (root / "JPEGImages").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{id_}.jpg")
        png(root / "pascal_2012_scribble" / f"{id_}.png", label)
        png(root / pseudo / f"{id_}.png", np.where(label == 255, 0, label).astype(np.uint8))
        png(root / "distance_map" / f"{id_}.png", rng.integers(0, 256, (h, w), dtype=np.uint8))
        png(root / "distance_pseudo" / f"{id_}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))  # RGB is fine
        png(root / "SegmentationClassAug" / f"{id_}.png", np.full((h, w), 20, np.uint8))
    return root


def kinds(report):
    return sorted(p.kind for p in report.problems)


@pytest.mark.parametrize("deep", [True, False])
def test_clean_dataset_passes(tmp_path, deep):
    root = make_root(tmp_path)
    report = check_dataset(str(root), pseudo="bmp", deep=deep)
    assert report.ok, report.summary()
    assert report.ids_checked == {"train": 3, "val": 2}
    assert report.fields == {"train": ("image", "scribble", "dist_s", "dist_c", "pseudo"), "val": ("image", "mask")}
    assert "OK" in report.summary()
    assert require_dataset(str(root), pseudo="bmp", deep=deep).ok


def test_missing_file(tmp_path):
    root = make_root(tmp_path)
    victim = root / "distance_map" / "t2.png"
    victim.unlink()
    report = check_dataset(str(root))
    assert kinds(report) == ["missing"]
    (p,) = report.problems
    assert p.path == str(victim) and str(victim) in p.message and "dist_s file not found" in p.message


def test_missing_pseudo_only_checked_when_named(tmp_path):
    root = make_root(tmp_path)
    (root / "bmp" / "t1.png").unlink()
    assert check_dataset(str(root)).ok                        # no pseudo named: not needed
    assert kinds(check_dataset(str(root), pseudo="bmp")) == ["missing"]


def test_size_mismatch_names_both_files(tmp_path):
    root = make_root(tmp_path)
    bad = root / "pascal_2012_scribble" / "t3.png"
    png(bad, np.full((12, 15), 255, np.uint8))
    for deep in (True, False):
        report = check_dataset(str(root), deep=deep)
        assert kinds(report) == ["size"]
        msg = report.problems[0].message
        assert msg.startswith(str(bad)) and "15x12" in msg and "t3.jpg" in msg and "16x12" in msg


def test_label_value_out_of_range(tmp_path):
    root = make_root(tmp_path)
    bad = np.full((12, 16), 20, np.uint8)
    bad[0, :3] = [21, 30, 254]
    png(root / "SegmentationClassAug" / "v2.png", bad)
    report = check_dataset(str(root))
    assert kinds(report) == ["label_value"]
    msg = report.problems[0].message
    assert "v2.png" in msg and "21, 30, 254" in msg and "3 pixels" in msg
    assert check_dataset(str(root), deep=False).ok             # quick mode reads headers only
    # a smaller class count makes the masks' 20 invalid; distance maps (random values) take any value
    report = check_dataset(str(root), num_classes=20)
    assert kinds(report) == ["label_value"] * 2 and all("SegmentationClassAug" in p.path for p in report.problems)


def test_undecodable_files(tmp_path):
    root = make_root(tmp_path)
    junk = root / "JPEGImages" / "t1.jpg"
    junk.write_bytes(b"this is not a jpeg")
    truncated = root / "distance_pseudo" / "t2.png"
    truncated.write_bytes(truncated.read_bytes()[:60])         # header intact, pixel data cut
    quick = check_dataset(str(root), deep=False)
    assert kinds(quick) == ["unreadable"] and str(junk) in quick.problems[0].message
    deep = check_dataset(str(root))
    assert kinds(deep) == ["unreadable", "unreadable"]
    assert {p.path for p in deep.problems} == {str(junk), str(truncated)}


def test_missing_id_list_and_duplicates(tmp_path):
    root = make_root(tmp_path)
    (root / "ImageSets" / "SegmentationAug" / "val.txt").unlink()
    (root / "ImageSets" / "SegmentationAug" / "train.txt").write_text("t1\nt2\nt1\n")
    report = check_dataset(str(root))
    assert kinds(report) == ["id_list", "id_list"]
    text = report.summary()
    assert "val.txt: id list not found" in text and "id 't1' listed 2 times" in text
    assert report.ids_checked == {"train": 2, "val": 0}


def test_missing_folder_is_one_problem_and_missing_root(tmp_path):
    root = make_root(tmp_path)
    os.rename(root / "distance_pseudo", root / "elsewhere")
    report = check_dataset(str(root), splits=("train",))
    assert kinds(report) == ["missing"] and "distance_pseudo: dist_c folder not found (3 ids need it)" in report.summary()
    assert check_dataset(str(root), splits=("train",), folders={"dist_c": "elsewhere"}).ok
    assert kinds(check_dataset(str(tmp_path / "nowhere"))) == ["missing"]


def test_fields_by_split_and_check_split(tmp_path):
    root = make_root(tmp_path)
    (root / "SegmentationClassAug" / "t1.png").unlink()
    assert check_dataset(str(root)).ok                         # train does not read masks by default
    report = check_dataset(str(root), fields_by_split={"train": ("image", "mask")})
    assert kinds(report) == ["missing"] and report.fields["train"] == ("image", "mask")
    problems = check_split(Layout(str(root)), ["t1", "t9"], ["scribble", "image"])
    assert sorted(p.path for p in problems) == sorted([str(root / "JPEGImages" / "t9.jpg"),
                                                       str(root / "pascal_2012_scribble" / "t9.png")])
    assert all(isinstance(p, Problem) for p in problems)
    with pytest.raises(ValueError, match="unknown field"):
        check_split(Layout(str(root)), ["t1"], ["label"])


def test_require_dataset_raises_with_summary(tmp_path):
    root = make_root(tmp_path)
    for id_ in TRAIN:
        (root / "distance_map" / f"{id_}.png").unlink()
    with pytest.raises(DatasetError) as e:
        require_dataset(str(root), splits=("train",))
    assert "3 problem(s): missing 3" in str(e.value) and "t1.png" in str(e.value)
    report = check_dataset(str(root), splits=("train",))
    short = report.summary(max_shown=1)
    assert "... and 2 more" in short and "t3.png" not in short


def test_cli_exit_codes(tmp_path, capsys):
    root = make_root(tmp_path)
    assert main(["--root", str(root), "--pseudo", "bmp"]) == 0
    assert "OK" in capsys.readouterr().out
    png(root / "pascal_2012_scribble" / "t1.png", np.full((12, 16), 99, np.uint8))
    assert main(["--root", str(root), "--split", "val"]) == 0   # the bad file is a train file
    assert main(["--root", str(root), "--quick"]) == 0           # values are not read in quick mode
    assert main(["--root", str(root), "--split", "train"]) == 1
    err = capsys.readouterr().err
    assert "label_value 1" in err and "t1.png" in err
    # --numclasses (train.py's spelling) and --num-classes are one option
    for flag in ("--numclasses", "--num-classes"):
        assert main(["--root", str(root), "--split", "train", flag, "100"]) == 0
        assert main(["--root", str(root), "--split", "train", flag, "99"]) == 1
        err = capsys.readouterr().err
        assert "t1.png: scribble values [99] (192 pixels) outside 0..98 (99 classes) and 255" in err


def test_module_entry_point(tmp_path):
    r = subprocess.run([sys.executable, "-m", "datasets.check", "--root", str(tmp_path / "none")],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "dataset root not found" in r.stderr


def test_loss_weight_flags_check_only_what_the_run_reads(tmp_path, capsys):
    """train.py's loss weights: pCE alone reads images and scribbles only (issue: `--l_dc 0`
    trains fine, but the check demanded distance_pseudo)."""
    import shutil

    from datasets.check import training_fields
    root = make_root(tmp_path)
    shutil.rmtree(root / "distance_pseudo")
    shutil.rmtree(root / "distance_map")
    pce = ["--l_pseudo", "0", "--l_ds", "0", "--l_dc", "0", "--l_lorm", "0"]
    assert main(["--root", str(root), "--split", "train", *pce]) == 0
    assert "[image, scribble]" in capsys.readouterr().out
    assert main(["--root", str(root), "--split", "train"]) == 1  # the default fields still include the maps
    assert "distance_pseudo: dist_c folder not found" in capsys.readouterr().err
    # + pseudo CE needs the pseudo-label folder, named as train.py names it
    with pytest.raises(SystemExit):
        main(["--root", str(root), "--l_ds", "0", "--l_dc", "0", "--l_lorm", "0"])
    assert "--pseudo_path is required" in capsys.readouterr().err
    assert main(["--root", str(root), "--pseudo_path", "bmp", "--l_ds", "0", "--l_dc", "0"]) == 0
    assert "[image, scribble, pseudo]" in capsys.readouterr().out  # LoRM reads the pseudo-label too
    # the same fields as train.py's model and loss
    import train
    from losses import CDSPLoss
    from models import build_model
    for w in ({"l_lorm": 0.0, "l_pseudo": 0.0}, {"l_dc": 0.0}, {}):
        crit = CDSPLoss(**w)
        model = build_model("deeplabv2", 18, 21, lorm=w.get("l_lorm", 1.0) != 0)
        assert training_fields(**w) == train.train_fields(crit, model)
