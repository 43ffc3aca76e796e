"""bench/ablation.py's statistics: the paired interval and the comparison of two sweeps."""
import json
import math
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.append(os.path.join(REPO, "bench"))  # last: its eval.py must not shadow the repo's
import ablation  # noqa: E402


def test_paired_interval_is_students_t_over_the_common_seeds():
    p = ablation.paired({1: 11.0, 2: 22.0, 3: 33.0, 9: 0.0}, {1: 10.0, 2: 20.0, 3: 30.0})
    assert p["n"] == 3 and p["mean"] == pytest.approx(2.0) and p["std"] == pytest.approx(1.0)
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, df=2) * std / sqrt(n)
    assert p["ci95"] == pytest.approx([2.0 - half, 2.0 + half])
    assert (p["favour_first"], p["favour_second"]) == (3, 0)
    assert ablation.paired({1: 1.0}, {1: 0.0}) is None  # one seed: no interval


def _sweep(commit, mious, times, recipe="r"):
    return {"meta": {"git_commit": commit, "recipe": recipe},
            "runs": [{"variant": "d", "seed": s, "miou_last": m, "miou_best": m + 1,
                      "train_s": t, "wall_s": t + 10} for s, m, t in zip((1000, 1001, 1002), mious, times)]}


def test_compare_pairs_by_seed_and_reports_time_ratios(tmp_path):
    before = _sweep("a" * 40, [20.0, 30.0, 25.0], [100.0, 100.0, 100.0])
    after = _sweep("b" * 40, [21.0, 29.0, 28.0], [80.0, 80.0, 80.0])
    text = ablation.compare(before, after)
    last = next(line for line in text.splitlines() if "val mIoU, last" in line)
    assert "+1.00" in last and "2 / 1" in last  # differences +1, -1, +3
    train = next(line for line in text.splitlines() if "train.py" in line)
    assert "ratio 0.800x [0.800, 0.800]" in train

    paths = []
    for name, doc in (("before", before), ("after", {**after, "meta": {**after["meta"], "recipe": "other"}})):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(doc))
    p = subprocess.run([sys.executable, os.path.join(REPO, "bench", "ablation.py"), "--compare", *map(str, paths)],
                       capture_output=True, text=True)
    assert p.returncode != 0 and "different recipes" in p.stderr
