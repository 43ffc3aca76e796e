"""bench/acdc.py --smoke: the sweep's code path (import of h5 volumes, random walker, maps, train,
eval with 3-D scores, paired report, picture) on generated files, and its resume."""
from __future__ import annotations

import json
import os
import sys

import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.append(os.path.join(REPO, "bench"))  # last: its eval.py must not shadow the repo's
import acdc  # noqa: E402


@pytest.fixture
def in_process(monkeypatch):
    """train.py / eval.py called in this process (the sweep starts them as subprocesses; the
    code path is the same, without a torch import per run)."""
    import eval as evaluation
    import train
    calls = []

    def run(cmd):
        script, *argv = cmd
        calls.append(script)
        assert {"train.py": train, "eval.py": evaluation}[script].main(argv) == 0
    monkeypatch.setattr(acdc, "run", run)
    return calls


def test_smoke_sweep_writes_json_table_picture_and_resumes(tmp_path, in_process, capsys):
    out, js = tmp_path / "work", tmp_path / "acdc.json"
    argv = ["--smoke", "--out", str(out), "--json", str(js), "--seeds", "2", "--variants", "a", "d"]
    acdc.main(argv)
    doc = json.loads(js.read_text())
    assert sorted((r["variant"], r["seed"]) for r in doc["runs"]) == [("a", 1000), ("a", 1001), ("d", 1000), ("d", 1001)]
    assert in_process == ["train.py", "eval.py"] * 4
    r = doc["runs"][0]
    assert set(r["dice"]) == {"RV", "Myo", "LV"} and r["cases"] == 2 and r["unit"] == "px"
    assert 0 <= r["dice_mean"] <= 100
    pl = doc["pseudo_labels"]
    assert set(pl) == {"train", "val"} and pl["train"]["cases"]["cases"] == 4
    md = (tmp_path / "acdc.md").read_text()
    assert "| (d) + LoRM (full CDSP) | 2 |" in md and "| d − a |" in md and "random-walker pseudo-labels" in md
    with Image.open(tmp_path / "acdc.png") as im:
        assert im.size[0] > 300
    # the data it made lives in the work folder, the pseudo-labels beside the slices
    assert (out / "data" / acdc.PSEUDO).is_dir() and (out / "data" / acdc.DIST_C).is_dir()
    # resumed: nothing is run again; another recipe is refused
    in_process.clear()
    acdc.main(argv)
    assert in_process == [] and len(json.loads(js.read_text())["runs"]) == 4
    with pytest.raises(SystemExit, match="another recipe"):
        acdc.main(argv + ["--train_path", "val"])
