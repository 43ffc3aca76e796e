"""train.py on CPU: flags, start-up checks, the schedule, learning, exact resume (and refused
resumes), atomic checkpoints, outputs that cannot be written, non-finite losses, and torchrun
DDP with two gloo processes."""
from __future__ import annotations

import csv
import glob
import json
import math
import os
import shutil

import pytest
import torch

import train
from conftest import corrupt_file, main_with_file_size_limit, torchrun
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.outputs import claim_output_dir
from utils.training import lr_at

TINY = ["--layers", "18", "--pretrained", "none", "--batchsize", "2", "--crop_size", "65",
        "--workers", "0", "--lr", "0.01", "--warmup", "1", "--pseudo_path", "pseudo_label"]


def run(root, logdir, *extra):
    return train.main(["--dataset_path", str(root), "--logdir", str(logdir), *TINY, *extra])


def test_unknown_flag_is_named(capsys):
    with pytest.raises(SystemExit) as e:
        train.parse_args(["--dataset_path", "x", "--pseudo_path", "p", "--bogus_flag", "1"])
    assert e.value.code == 2
    assert "--bogus_flag" in capsys.readouterr().err


def test_authors_flag_names_parse():
    args = train.parse_args(["--layers", "101", "--model_type", "deeplabv3p", "--dataset_path", "d",
                             "--train_path", "t.txt", "--pseudo_path", "BMP", "--distancemap_s", "ds",
                             "--distancemap_c", "dc", "--l_seg", "1", "--l_pesudo", "0.5", "--l_lorm",
                             "0.1", "--label_smooth", "0.2", "--l_ds", "1", "--l_dc", "1",
                             "--numclasses", "21", "--workers", "2", "--batchsize", "4", "--lr", "0.002",
                             "--warmup", "2", "--wdecay", "1e-4", "--momentum", "0.8", "--epochs", "3",
                             "--logdir", "l"])
    assert args.l_pseudo == 0.5 and args.layers == 101 and args.model_type == "deeplabv3p"
    assert args.distancemap_c == "dc" and args.label_smooth == 0.2


def test_pseudo_path_required_only_when_used(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--dataset_path", "d"])
    assert "--pseudo_path" in capsys.readouterr().err
    args = train.parse_args(["--dataset_path", "d", "--l_pseudo", "0", "--l_lorm", "0"])
    assert args.pseudo_path is None


def test_lr_schedule_warmup_then_cosine_to_zero():
    base, warm, total = 0.1, 10, 110
    lrs = [lr_at(i, base, warm, total) for i in range(total)]
    assert lrs[0] == pytest.approx(base / warm)
    assert lrs[warm - 1] == pytest.approx(base)              # end of warm-up: the peak
    assert all(a < b for a, b in zip(lrs[:warm - 1], lrs[1:warm]))
    assert all(a >= b for a, b in zip(lrs[warm:], lrs[warm + 1:]))  # cosine never rises
    assert lrs[warm + 50] == pytest.approx(base * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(total, base, warm, total) == pytest.approx(0.0, abs=1e-12)


def test_broken_dataset_is_a_clear_error(synthetic_root, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    victim = sorted(glob.glob(str(root / "distance_map" / "*.png")))[0]
    os.remove(victim)
    assert run(root, tmp_path / "log", "--epochs", "1") == 1
    err = capsys.readouterr().err
    assert "error:" in err and os.path.basename(victim) in err and "Traceback" not in err


def test_label_range_follows_numclasses(synthetic_root, tmp_path, capsys):
    import numpy as np
    from utils.io import read_label, save_png
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    victim = sorted(glob.glob(str(root / "pascal_2012_scribble" / "train_*.png")))[-1]
    scribble = read_label(victim).copy()
    scribble[0, 0] = 7  # a VOC class, but not one of a 6-class run's
    save_png(scribble.astype(np.uint8), victim)
    for workers in ("0", "1"):  # the dataset's own check, also from inside a loader worker
        assert run(root, tmp_path / f"log{workers}", "--epochs", "1", "--numclasses", "6",
                   "--no_check", "--workers", workers) == 1
        err = capsys.readouterr().err
        assert victim in err and "outside 0..5" in err and "Traceback" not in err


def test_dataset_description_sets_the_classes_and_checks_labels(make_synthetic, tmp_path, capsys):
    root = make_synthetic(num_classes=2)   # background + 2 classes: labels 0..2
    (root / "dataset.yaml").write_text("classes: [background, a, b]\n")
    assert run(root, tmp_path / "log", "--epochs", "1") == 0   # --numclasses from the description
    ckpt = load_checkpoint(str(tmp_path / "log" / "last_checkpoint.pth"))
    assert ckpt["args"]["numclasses"] == 3 and ckpt["dataset_meta"]["classes"] == ["background", "a", "b"]
    capsys.readouterr()
    assert run(root, tmp_path / "log2", "--epochs", "1", "--numclasses", "6") == 1
    err = capsys.readouterr().err
    assert "--numclasses 6 conflicts with" in err and "dataset.yaml" in err and "Traceback" not in err
    # a label 5 in a 3-class set: the file is named
    from utils.io import read_label, save_png
    first = open(root / "ImageSets" / "SegmentationAug" / "train.txt").read().split()[0]
    scribble = root / "pascal_2012_scribble" / f"{first}.png"
    lab = read_label(str(scribble)).copy()
    lab[0, 0] = 5
    save_png(lab, str(scribble))
    assert run(root, tmp_path / "log3", "--epochs", "1") == 1
    err = capsys.readouterr().err
    assert str(scribble) in err and "outside 0..2 (3 classes)" in err


def test_a_set_without_background_refuses_lorm_d_s_and_d_c(make_synthetic, tmp_path, capsys):
    root = make_synthetic(num_classes=2)
    (root / "dataset.yaml").write_text("classes: [x, a, b]\nbackground: null\n")
    assert run(root, tmp_path / "log", "--epochs", "1") == 1
    err = capsys.readouterr().err
    assert "one is needed by LoRM (--l_lorm) and DEL on D_s (--l_ds) and DEL on D_c (--l_dc)" in err
    assert "--l_lorm 0 --l_ds 0 --l_dc 0" in err and "Traceback" not in err
    # partial CE + pseudo CE train on it (labels 0..2 all classes, none background)
    assert run(root, tmp_path / "log2", "--epochs", "1", "--l_lorm", "0", "--l_ds", "0", "--l_dc", "0") == 0


def test_batch_of_one_without_syncbn_is_refused(synthetic_root, tmp_path, capsys):
    assert run(synthetic_root, tmp_path / "log", "--epochs", "1", "--batchsize", "1") == 1
    assert "--batchsize" in capsys.readouterr().err


def test_zero_weight_fields_are_never_read(synthetic_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    shutil.rmtree(root / "distance_pseudo")      # D_c unused when --l_dc 0
    assert run(root, tmp_path / "log", "--epochs", "1", "--l_dc", "0") == 0
    assert os.path.isfile(tmp_path / "log" / "last_checkpoint.pth")


def test_training_steps_lower_the_loss(synthetic_root):
    torch.manual_seed(0)
    args = train.parse_args(["--dataset_path", str(synthetic_root), *TINY, "--lr", "0.05"])
    train.run_meta(args)  # --numclasses from the synthetic set's description
    criterion = train.CDSPLoss()
    model, optimizer = train.build(args, torch.device("cpu"))
    assert train.train_fields(criterion, model) == ("image", "scribble", "pseudo", "dist_s", "dist_c")
    loader, _ = train.build_loaders(args, train.train_fields(criterion, model), torch.device("cpu"))
    task = train.SegmentationTask(model, optimizer, torch.device("cpu"), None, criterion)
    batch = next(iter(loader))
    losses = []
    for _ in range(8):      # the same batch: the loss must go down
        total, _, _ = task.loss(batch)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(float(total.detach()))
    assert losses[-1] < 0.8 * losses[0], losses


def test_outputs_and_checkpoint_contents(synthetic_root, tmp_path):
    log = tmp_path / "log"
    assert run(synthetic_root, log, "--epochs", "2", "--val_interval", "1") == 0
    for name in ("last_checkpoint.pth", "best_checkpoint.pth", "metrics.csv", "curves.png",
                 "config.json", "train_samples.png"):
        assert os.path.getsize(log / name) > 0, name
    assert glob.glob(str(log / "tb" / "events.out.tfevents.*"))
    ckpt = load_checkpoint(str(log / "last_checkpoint.pth"))
    assert {"state_dict", "optimizer", "scaler", "epoch", "iteration", "best_miou", "args"} <= set(ckpt)
    assert ckpt["epoch"] == 2 and ckpt["args"]["layers"] == 18
    rows = open(log / "metrics.csv").read().strip().splitlines()
    assert len(rows) == 3 and "val_miou" in rows[0] and "loss_pce" in rows[0]


def test_resume_auto_equals_straight_run(synthetic_root, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run(synthetic_root, straight, "--epochs", "2") == 0
    assert run(synthetic_root, resumed, "--epochs", "2", "--stop_after", "1") == 0
    first = load_checkpoint(str(resumed / "last_checkpoint.pth"))
    assert first["epoch"] == 1
    assert run(synthetic_root, resumed, "--epochs", "2", "--resume", "auto") == 0
    a = load_checkpoint(str(straight / "last_checkpoint.pth"))
    b = load_checkpoint(str(resumed / "last_checkpoint.pth"))
    assert a["iteration"] == b["iteration"] == 2 * first["iteration"]
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]
    # The resumed run's metrics.csv holds each epoch once.
    assert len(open(resumed / "metrics.csv").read().strip().splitlines()) == 3


def _metrics_rows(logdir) -> list[dict]:
    """metrics.csv rows without the wall-clock column."""
    with open(os.path.join(logdir, "metrics.csv"), newline="") as f:
        return [{k: v for k, v in row.items() if k != "time_s"} for row in csv.DictReader(f)]


def test_training_loader_reshuffles_per_epoch_and_leaves_the_global_rng(synthetic_root):
    """Persistent workers: the sampler still runs in the main process at each epoch's iterator,
    so set_epoch (before it) reshuffles; drawing the workers' base seed from the loader's own
    generator leaves the global torch RNG (dropout) as a run with --workers 0 finds it."""
    args = train.parse_args(["--dataset_path", str(synthetic_root), *TINY, "--workers", "2"])
    train.run_meta(args)
    loader, val_loader = train.build_loaders(args, ("image", "scribble"), torch.device("cpu"))
    assert loader.persistent_workers and val_loader.persistent_workers
    torch.manual_seed(0)
    state = torch.get_rng_state()
    orders = []
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)
        expected = [loader.dataset.ids[i] for i in loader.sampler.sampler]  # DistributedSampler's
        orders.append([i for batch in loader for i in batch["id"]])
        assert orders[-1] == expected[:len(orders[-1])]
    assert len({tuple(o) for o in orders}) == 3
    assert torch.equal(torch.get_rng_state(), state)


def test_worker_processes_change_no_data_and_resume_exactly(synthetic_root, tmp_path, monkeypatch):
    """Persistent loader workers (--workers 2) see the same ids in the same order and draw the
    same augmentations as --workers 0, epoch by epoch; a run stopped after epoch 1 and resumed
    with workers 2 reproduces the uninterrupted run's metrics.csv exactly."""
    steps = []  # per step: (ids, checksums of the augmented images, of their scribbles)
    loss = train.SegmentationTask.loss

    def recording(self, batch):
        steps.append((tuple(batch["id"]), tuple(batch["image"].double().sum((1, 2, 3)).tolist()),
                      tuple(batch["scribble"].long().sum((1, 2)).tolist())))
        return loss(self, batch)

    monkeypatch.setattr(train.SegmentationTask, "loss", recording)
    epochs, seen = 3, {}
    for name, extra in {"w0": ["--workers", "0"], "w2": ["--workers", "2"],
                        "w2_stopped": ["--workers", "2", "--stop_after", "1"],
                        "w2_resumed": ["--workers", "2", "--resume", "auto"]}.items():
        steps.clear()
        logdir = tmp_path / ("w2_resumed" if name.startswith("w2_") else name)
        assert run(synthetic_root, logdir, "--epochs", str(epochs), "--val_interval", "1", *extra) == 0
        seen[name] = list(steps)
    per_epoch = len(seen["w0"]) // epochs
    assert per_epoch >= 2 and len(seen["w0"]) == epochs * per_epoch
    assert seen["w2"] == seen["w0"]  # ids, order and augmentation: the workers change nothing
    assert seen["w2_stopped"] + seen["w2_resumed"] == seen["w0"]
    orders = [[i for s in seen["w0"][e * per_epoch:(e + 1) * per_epoch] for i in s[0]] for e in range(epochs)]
    assert len({tuple(o) for o in orders}) == epochs  # reshuffled every epoch
    for e in range(epochs):  # every image once per epoch, each draw different from the last epoch's
        assert len(set(orders[e])) == len(orders[e])
    draws = [{i: c for s in seen["w0"][e * per_epoch:(e + 1) * per_epoch] for i, c in zip(s[0], s[1])}
             for e in range(epochs)]
    assert all(draws[e][i] != draws[e + 1][i]
               for e in range(epochs - 1) for i in draws[e] if i in draws[e + 1])
    rows = _metrics_rows(tmp_path / "w0")
    assert len(rows) == epochs
    assert _metrics_rows(tmp_path / "w2") == rows
    assert _metrics_rows(tmp_path / "w2_resumed") == rows


def test_resume_with_other_schedule_flags_is_refused_unless_overridden(synthetic_root, tmp_path, capsys):
    log = tmp_path / "log"
    assert run(synthetic_root, log, "--epochs", "2", "--stop_after", "1") == 0
    kept = {n: (log / n).read_bytes() for n in ("config.json", "metrics.csv", "last_checkpoint.pth")}
    capsys.readouterr()
    # TINY has --lr 0.01 --batchsize 2; argparse takes the last value of a repeated flag.
    assert run(synthetic_root, log, "--epochs", "2", "--resume", "auto", "--lr", "0.02",
               "--batchsize", "3") == 1
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert "--lr 0.01 -> 0.02" in err and "--batchsize 2 -> 3" in err and "--resume_override" in err
    assert "--epochs" not in err.split("differ")[1].split("Resume")[0]  # unchanged flags not listed
    for name, data in kept.items():  # a refused resume writes nothing
        assert (log / name).read_bytes() == data, name
    assert run(synthetic_root, log, "--epochs", "2", "--resume", "auto", "--lr", "0.02",
               "--resume_override") == 0
    out = capsys.readouterr().out
    assert "warning: --resume_override" in out and "--lr 0.01 -> 0.02" in out
    assert "lr schedule recomputed for --lr 0.02 --epochs 2" in out  # what the lr does, in words
    ckpt = load_checkpoint(str(log / "last_checkpoint.pth"))
    assert ckpt["epoch"] == 2 and ckpt["args"]["lr"] == 0.02
    assert json.load(open(log / "config.json"))["lr"] == 0.02


def test_start_clears_only_our_stale_temp_files(synthetic_root, tmp_path):
    log = tmp_path / "log"
    claim_output_dir(str(log), "train.py")  # the folder of a run killed before its first epoch ended
    ours = [".last_checkpoint.k2x_9qaz.tmp.pth", ".metrics.0a1b2c3d.tmp.csv"]  # a killed run's
    foreign = [".last_checkpoint.tmp.pth", "notes.tmp.txt", ".cache.abc.tmp", ".x.12345678.tmpfoo"]
    for name in ours + foreign:
        (log / name).write_bytes(b"x" * 1000)
    assert run(synthetic_root, log, "--epochs", "1") == 0
    left = set(os.listdir(log))
    assert not left & set(ours) and set(foreign) <= left
    assert not [n for n in left if ".tmp" in n and n not in foreign]  # none of this run's either


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_log_dir_that_is_a_file_is_one_line(synthetic_root, tmp_path, capsys, where):
    (tmp_path / "f").write_text("mine")
    log = tmp_path / "f" if where == "file" else tmp_path / "f" / "sub"
    assert run(synthetic_root, log, "--epochs", "1") == 1
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and f"--logdir {log}" in err and "not a folder" in err
    assert (tmp_path / "f").read_text() == "mine"


def test_imagenet_weights_without_network_is_one_line(synthetic_root, tmp_path, monkeypatch, capsys):
    import urllib.error

    import torchvision.models._api as tv_api

    def offline(url, *a, **k):
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    argv = ["--dataset_path", str(synthetic_root), "--logdir", str(tmp_path / "log"), *TINY,
            "--pretrained", "imagenet", "--epochs", "1"]  # the last --pretrained wins
    assert train.main(argv) == 1
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert "could not be downloaded" in err and "resnet18" in err
    assert "--pretrained FILE" in err and "--pretrained none" in err


def test_full_disk_while_checkpointing_is_one_line(synthetic_root, tmp_path):
    """A file-size limit makes every write past it fail the way a full disk does (the kernel's
    EFBIG instead of ENOSPC): torch.save's writer fails mid-checkpoint."""
    log = tmp_path / "log"
    proc = main_with_file_size_limit("train", ["--dataset_path", synthetic_root, "--logdir", log, *TINY,
                                               "--epochs", "1"], 1 << 20)
    assert proc.returncode == 1, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr and "disk is full" in err and "_checkpoint.pth" in err
    assert not [n for n in os.listdir(log) if ".tmp" in n]
    assert not (log / "last_checkpoint.pth").exists() and not (log / "best_checkpoint.pth").exists()


def test_kill_during_checkpoint_write_keeps_previous(tmp_path, monkeypatch):
    path = str(tmp_path / "last_checkpoint.pth")
    save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, path)

    def dying_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 truncated")
        raise KeyboardInterrupt  # the process is killed mid-write

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2}, path)
    monkeypatch.undo()
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 1 and torch.equal(ckpt["state_dict"]["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["last_checkpoint.pth"]


def test_non_finite_loss_stops_with_step_and_term(synthetic_root, tmp_path, monkeypatch, capsys):
    log = tmp_path / "log"
    assert run(synthetic_root, log, "--epochs", "2", "--stop_after", "1") == 0
    before = load_checkpoint(str(log / "last_checkpoint.pth"))
    real = train.CDSPLoss.forward
    calls = {"n": 0}

    def poisoned(self, outputs, batch):
        total, terms = real(self, outputs, batch)
        calls["n"] += 1
        if calls["n"] == 2:
            terms["del_s"] = terms["del_s"] * float("nan")
            total = sum(v for k, v in terms.items() if k != "total")
            terms["total"] = total
        return total, terms

    monkeypatch.setattr(train.CDSPLoss, "forward", poisoned)
    assert run(synthetic_root, log, "--epochs", "2", "--resume", "auto") == 1
    err = capsys.readouterr().err
    assert "non-finite loss" in err and "step 2" in err and "del_s" in err
    after = load_checkpoint(str(log / "last_checkpoint.pth"))
    assert after["epoch"] == before["epoch"] == 1


@pytest.mark.parametrize("workers", ["0", "2"])
def test_torchrun_bad_image_on_one_rank_ends_every_rank(make_synthetic, tmp_path, workers):
    root = make_synthetic()
    ids = [l.strip() for l in open(root / "ImageSets" / "SegmentationAug" / "train.txt") if l.strip()]
    (tmp_path / "four.txt").write_text("\n".join(ids[:4]) + "\n")  # 2 ranks x 1 batch of 2: all read
    bad = str(root / "JPEGImages" / f"{ids[2]}.jpg")
    corrupt_file(bad)
    proc, seconds = torchrun("train.py", ["--dataset_path", str(root), "--logdir", str(tmp_path / "log"),
                                          *TINY, "--epochs", "2", "--device", "cpu", "--no_check",
                                          "--train_path", str(tmp_path / "four.txt"), "--workers", workers],
                             timeout=240)
    assert proc.returncode != 0 and seconds < 90, proc.stderr[-3000:]
    assert (proc.stdout + proc.stderr).count(bad) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout.split("torch.distributed")[0]


def test_torchrun_two_gloo_processes_stay_in_sync(synthetic_root, tmp_path):
    log = tmp_path / "ddp"
    p, _ = torchrun("train.py", ["--dataset_path", str(synthetic_root), "--logdir", str(log),
                                 *TINY, "--epochs", "1", "--device", "cpu"])
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "weights identical on all 2 ranks" in p.stdout
    assert "terminate called" not in p.stderr
    ckpt = load_checkpoint(str(log / "last_checkpoint.pth"))
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])   # saved unwrapped
    n_train = len([l for l in open(os.path.join(synthetic_root, "ImageSets", "SegmentationAug",
                                                  "train.txt")) if l.strip()])
    assert ckpt["iteration"] == n_train // 2 // 2  # each rank: half the ids, in batches of 2


def test_schedule_note_says_where_the_lr_jumps():
    """--resume_override with a longer schedule: the lr is recomputed per iteration (the issue's
    case: a 3-epoch run extended to 6 jumps from ~0 back up)."""
    from utils.training import schedule_note
    saved = {"lr": 0.01, "epochs": 3, "warmup": 0.0}
    assert schedule_note(saved, dict(saved), 3, 300, 100) is None
    note = schedule_note(saved, {**saved, "epochs": 6}, 3, 300, 100)
    old, new = lr_at(300, 0.01, 0, 300), lr_at(300, 0.01, 0, 600)
    assert old == 0.0 and new == pytest.approx(0.005)
    assert f"from {old:.3g} (the checkpoint's schedule) to {new:.3g}" in note and "iteration 600" in note


def test_validation_scores_whole_images_as_eval_does(synthetic_root):
    """Training-time validation: each whole image at its own size, crop_size windows (eval.py's
    multi-scale code at one scale), not a centre crop."""
    import eval as evaluation
    from utils.metrics import ConfusionMeter
    args = train.parse_args(["--dataset_path", str(synthetic_root), *TINY])
    meta = train.run_meta(args)
    torch.manual_seed(0)
    model, _ = train.build(args, torch.device("cpu"))
    _, val_loader = train.build_loaders(args, ("image", "scribble"), torch.device("cpu"), meta)
    got = train.validate(model, val_loader, torch.device("cpu"), args.numclasses, None, False, crop_size=65)
    assert model.training  # validate puts it back
    model.eval()
    meter = ConfusionMeter(args.numclasses)
    from datasets.scribble import ScribbleDataset
    from datasets.transforms import ValTransform
    for sample in ScribbleDataset(str(synthetic_root), "val", ("image", "mask"), transform=ValTransform(None)):
        assert sample["image"].shape[-2:] == sample["mask"].shape  # whole images (64x80), no crop
        probs = evaluation.predict(model, sample["image"], scales=(1.0,), base_size=None, crop_size=65)
        meter.update(probs.argmax(0), sample["mask"])
    assert got["miou"] == pytest.approx(meter.scores()["miou"])
