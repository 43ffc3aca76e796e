"""datasets/class_labels.py on hand-made 8x10 scribbles."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from datasets.class_labels import collect_class_labels, image_classes, main
from conftest import main_with_file_size_limit
from datasets.layout import DatasetError
from utils.io import save_png

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _scribble(strokes: dict) -> np.ndarray:
    """8x10 all-255 map with row r set to the given value."""
    s = np.full((8, 10), 255, np.uint8)
    for row, value in strokes.items():
        s[row, 2:8] = value
    return s


@pytest.fixture
def root(tmp_path):
    scribbles = {
        "bg_only": _scribble({1: 0, 5: 0}),        # background stroke only
        "multi": _scribble({0: 0, 2: 15, 4: 3, 6: 15}),
        "one": _scribble({3: 7}),                  # no background stroke, one class
    }
    (tmp_path / "ImageSets" / "SegmentationAug").mkdir(parents=True)
    (tmp_path / "ImageSets" / "SegmentationAug" / "train.txt").write_text("\n".join(scribbles) + "\n")
    for id_, s in scribbles.items():
        save_png(s, str(tmp_path / "pascal_2012_scribble" / f"{id_}.png"))
    return tmp_path


def test_image_classes():
    assert image_classes(_scribble({0: 0, 2: 20, 3: 1})) == [1, 20]
    assert image_classes(np.full((4, 4), 255, np.uint8)) == []
    assert image_classes(np.zeros((4, 4), np.uint8)) == []
    with pytest.raises(ValueError, match="21"):
        image_classes(_scribble({0: 21}))
    assert image_classes(_scribble({0: 5, 1: 3}), num_classes=6) == [3, 5]
    with pytest.raises(ValueError):
        image_classes(_scribble({0: 5, 1: 6}), num_classes=6)


def test_collect(root):
    labels, no_fg = collect_class_labels(str(root))
    assert labels == {"bg_only": [], "multi": [3, 15], "one": [7]}
    assert list(labels) == ["bg_only", "multi", "one"]  # split order
    assert no_fg == ["bg_only"]


def test_cli_writes_json_and_warns(root, capsys):
    assert main(["--root", str(root)]) == 0
    out, err = capsys.readouterr()
    data = json.loads((root / "class_labels_train.json").read_text())
    assert data == {"bg_only": [], "multi": [3, 15], "one": [7]}
    assert "ids: 3" in out
    assert "mean foreground classes per image: 1.00" in out
    assert [line.split()[-1] for line in out.splitlines() if "person:" in line] == ["1"]
    assert "1 id(s) with no foreground stroke" in err and "bg_only" in err


def test_cli_out_path(root, tmp_path, capsys):
    out = tmp_path / "sub" / "labels.json"
    assert main(["--root", str(root), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["one"] == [7]
    assert not (root / "class_labels_train.json").exists()


def test_missing_scribble(root):
    os.remove(root / "pascal_2012_scribble" / "one.png")
    with pytest.raises(DatasetError, match="one.png"):
        collect_class_labels(str(root))
    r = subprocess.run([sys.executable, "-m", "datasets.class_labels", "--root", str(root)],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 1
    assert "one.png" in r.stderr and "not found" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (root / "class_labels_train.json").exists()
    assert not [f for f in os.listdir(root) if f.endswith(".json") or ".tmp" in f]


def test_unreadable_and_bad_value(root, capsys):
    path = root / "pascal_2012_scribble" / "multi.png"
    path.write_bytes(b"not a png")
    assert main(["--root", str(root)]) == 1
    assert "multi.png" in capsys.readouterr().err
    save_png(_scribble({0: 40}), str(path))
    assert main(["--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "multi.png" in err and "40" in err
    assert not (root / "class_labels_train.json").exists()


def test_out_onto_a_folder_or_a_full_disk_is_one_line(root, tmp_path, capsys):
    (tmp_path / "dir.json").mkdir()
    assert main(["--root", str(root), "--out", str(tmp_path / "dir.json")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dir.json: is a folder" in err
    # a file-size limit fails the write as a full disk does (EFBIG instead of ENOSPC)
    out = tmp_path / "labels.json"
    proc = main_with_file_size_limit("datasets.class_labels", ["--root", root, "--out", out], 8)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.count("error:") == 1 and "labels.json: cannot write it: the disk is full" in proc.stderr
    assert not out.exists() and not [n for n in os.listdir(tmp_path) if ".tmp" in n]
