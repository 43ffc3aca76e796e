"""bench/gpu.py cannot rot: its --smoke run (CPU, toy sizes, the same code paths) exits 0 and
writes gpu.json with every section and its numbers; a failing section is recorded while the
others still run (exit 1); without CUDA and without --smoke it refuses in one line."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# bench/gpu.py as a module, without putting bench/ on sys.path (its eval.py would shadow the repo's)
_spec = importlib.util.spec_from_file_location("bench_gpu", os.path.join(REPO, "bench", "gpu.py"))
gpu = sys.modules["bench_gpu"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and v >= 0


def test_smoke_run_writes_every_section_with_numbers(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "bench", "gpu.py"), "--smoke", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "CPU SMOKE" in proc.stdout
    report = json.loads((out / "gpu.json").read_text())
    assert report["environment"]["smoke"] is True and report["failed_sections"] == []
    sec = report["sections"]
    assert set(sec) == set(gpu.SECTIONS)
    assert all(s["status"] == "ok" and _number(s["seconds"]) for s in sec.values())

    c = sec["correctness"]
    assert all(_number(c[k]) for k in ("passed", "failed", "error", "skipped"))
    assert c["failed"] == c["error"] == 0 and len(c["tests"]) >= 5
    if not torch.cuda.is_available():
        assert c["skipped"] == len(c["tests"])  # every CUDA test skips on a CPU machine

    t = sec["train"]
    assert set(t["variants"]) == {"plain", "lorm", "explicit", "held"}
    for v in t["variants"].values():
        assert all(_number(v[k]) and v[k] > 0 for k in ("s_per_step", "images_per_s", "peak_mib"))
    assert _number(t["lorm_vs_plain"]["time"]) and _number(t["explicit_vs_lorm"]["time"])
    assert _number(t["released_vs_held"]["memory"])
    assert isinstance(t["lorm_vs_plain"]["met"], bool)

    i = sec["input"]
    assert i["rates"] and all(_number(r["images_per_s"]) and r["images_per_s"] > 0 for r in i["rates"].values())
    assert _number(i["step_consumes_images_per_s"])
    assert all(isinstance(r["gpu_would_starve"], bool) for r in i["rates"].values())

    e = sec["eval"]
    assert len(e["runs"]) == 4 and e["scales"] == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    for r in e["runs"].values():
        assert all(_number(r[k]) for k in ("images_per_s", "speedup_vs_crop_batch_1", "labels_equal_pct"))
    assert e["identical_labels_fp32"] is True
    assert _number(e["speedup_fp32"]["value"]) and _number(e["speedup_amp"]["value"])


def test_a_failing_section_is_recorded_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    real = gpu.time_train_step

    def explicit_fails(cfg, device, variant):
        if variant == "explicit":
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(cfg, device, variant)

    def broken(*a):
        raise ValueError("input section broke")

    monkeypatch.setattr(gpu, "time_train_step", explicit_fails)
    monkeypatch.setattr(gpu, "input_pipeline", broken)
    code = gpu.main(["--smoke", "--out", str(tmp_path), "--sections", "train,input"])
    assert code == 1
    report = json.loads((tmp_path / "gpu.json").read_text())
    sec = report["sections"]
    assert report["failed_sections"] == ["train", "input"]
    assert sec["train"]["status"] == "error" and "simulated" in sec["train"]["variants"]["explicit"]["error"]
    assert _number(sec["train"]["variants"]["plain"]["images_per_s"])     # the other variants ran
    assert _number(sec["train"]["lorm_vs_plain"]["time"])
    assert sec["input"]["status"] == "error" and "input section broke" in sec["input"]["error"]
    assert "Traceback" in sec["input"]["traceback"]
    assert "FAILED sections: train, input" in capsys.readouterr().out


def test_without_cuda_and_without_smoke_it_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu.main(["--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "GPU" in err and "--smoke" in err
    assert not (tmp_path / "gpu.json").exists()
