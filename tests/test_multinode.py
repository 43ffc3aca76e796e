"""Beyond one node (issue 11 item 10): train.py under torchrun across two "nodes" on 127.0.0.1
(c10d rendezvous, one gloo process each), and a worker SIGKILLed mid-epoch under
`torchrun --max-restarts 1`, after which the restarted group continues from the last checkpoint
(`--resume auto`) and ends exactly where an uninterrupted run ends.

Every torchrun is a Popen with a deadline: on a hang the whole process tree (torchrun's workers
run in sessions of their own) is SIGKILLed and the test fails instead of stalling CI.
"""
from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest
import torch

from conftest import SYNTHETIC_SMALL, SyntheticRoot
from datasets.synthetic import generate
from utils.checkpoint import load_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_IDS, EPOCHS = 24, 3   # 2 ranks x batch 2: 6 steps an epoch, so a kill lands mid-epoch
ITERS = TRAIN_IDS // 2 // 2
FLAGS = ["--layers", "18", "--pretrained", "none", "--batchsize", "2", "--crop_size", "65",
         "--workers", "0", "--lr", "0.01", "--warmup", "1", "--pseudo_path", "pseudo_label",
         "--numclasses", "6", "--no_check", "--device", "cpu", "--epochs", str(EPOCHS)]
DEADLINE_S = 240   # one torchrun: ~30 s here; a hang fails at this


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(torchrun_args: list[str], train_args: list[str], out_path,
          env: dict | None = None) -> subprocess.Popen:
    """`python -m torch.distributed.run ... train.py ...`, stdout + stderr into `out_path`
    (a file, not a pipe: nobody has to drain it while we wait)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO, LOGLEVEL="INFO", **(env or {}))
    cmd = [sys.executable, "-m", "torch.distributed.run", *torchrun_args,
           os.path.join(REPO, "train.py"), *train_args]
    with open(out_path, "w") as out:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def children(pid: int) -> list[int]:
    kids = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(k) for k in f.read().split()]
    except OSError:  # gone meanwhile
        pass
    return kids


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for kid in children(todo.pop()):
            found.append(kid)
            todo.append(kid)
    return found


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL torchrun and every process under it (its workers are not in its process group)."""
    if proc.poll() is not None:
        return
    tree = descendants(proc.pid)
    proc.kill()
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def wait_all(procs: list[subprocess.Popen], outs: list, deadline: float) -> None:
    try:
        for p in procs:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for p in procs:
            kill_tree(p)
        pytest.fail("torchrun hung; killed. Output tails:\n" +
                    "\n".join(f"--- {o}\n{read(o)[-3000:]}" for o in outs))


def read(path) -> str:
    with open(path, errors="replace") as f:
        return f.read()


def env_of(pid: int) -> dict:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            items = f.read().split(b"\0")
    except OSError:
        return {}
    return dict(i.decode(errors="replace").split("=", 1) for i in items if b"=" in i)


def mtime(path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return None


def metrics(logdir) -> list[dict]:
    """metrics.csv rows without the wall-clock column."""
    with open(os.path.join(logdir, "metrics.csv"), newline="") as f:
        return [{k: v for k, v in row.items() if k != "time_s"} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def data24(tmp_path_factory) -> SyntheticRoot:
    root = tmp_path_factory.mktemp("synthetic24") / "VOC"
    generate(str(root), progress=False, **{**SYNTHETIC_SMALL, "train": TRAIN_IDS})
    return SyntheticRoot(root)


@pytest.fixture(scope="module")
def two_nodes(data24, tmp_path_factory) -> dict:
    """Two torchrun agents ("nodes") with one gloo process each, rendezvous c10d on 127.0.0.1,
    each with its own --logdir (as two machines without a shared disk would be)."""
    tmp = tmp_path_factory.mktemp("two_nodes")
    port, rdzv_id = free_port(), f"cdsp-test-{uuid.uuid4().hex[:12]}"
    logdirs = [tmp / f"log_node{i}" for i in (0, 1)]
    outs = [tmp / f"node{i}.out" for i in (0, 1)]
    t0 = time.monotonic()
    procs = [start(["--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(i),
                    "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
                    "--rdzv_id", rdzv_id, "--max-restarts", "0"],
                   ["--dataset_path", str(data24), "--logdir", str(logdirs[i]), *FLAGS], outs[i])
             for i in (0, 1)]
    wait_all(procs, outs, t0 + DEADLINE_S)
    return {"codes": [p.returncode for p in procs], "outs": [read(o) for o in outs],
            "logdirs": logdirs, "seconds": time.monotonic() - t0}


def test_two_nodes_train_to_identical_weights(two_nodes):
    codes, outs, logdirs = two_nodes["codes"], two_nodes["outs"], two_nodes["logdirs"]
    assert codes == [0, 0], "\n".join(o[-3000:] for o in outs)
    both = "".join(outs)
    # Printed by global rank 0 after comparing every rank's weights (all_gather over both nodes).
    assert both.count("weights identical on all 2 ranks") == 1, both[-3000:]
    assert "Traceback" not in both and "terminate called" not in both
    # c10d assigns the global ranks (--node_rank is only a hint): exactly one node got rank 0,
    # and it alone wrote; the other node's --logdir was never even created.
    writers = [d for d in logdirs if os.path.isfile(d / "last_checkpoint.pth")]
    assert len(writers) == 1, logdirs
    assert not [d for d in logdirs if d not in writers and os.path.exists(d)]
    ckpt = load_checkpoint(str(writers[0] / "last_checkpoint.pth"))
    assert ckpt["epoch"] == EPOCHS and ckpt["iteration"] == EPOCHS * ITERS
    assert ckpt["args"]["world_size"] == 2
    assert [int(r["epoch"]) for r in metrics(writers[0])] == list(range(1, EPOCHS + 1))


def test_worker_killed_mid_epoch_restarts_from_last_checkpoint(data24, two_nodes, tmp_path):
    """`torchrun --max-restarts 1`: rank 0 (the writer) is SIGKILLed in epoch 2; torchrun stops
    the other rank, starts a new group, and `--resume auto` continues from epoch 1's checkpoint.
    The result equals the uninterrupted two-rank run (the two-node run above: the same 2 ranks,
    the same flags), weights and metrics."""
    log, out = tmp_path / "log", tmp_path / "torchrun.out"
    ckpt_path, samples = log / "last_checkpoint.pth", log / "train_samples.png"
    t0 = time.monotonic()
    port, rdzv_id = free_port(), f"cdsp-test-{uuid.uuid4().hex[:12]}"
    proc = start(["--nnodes", "1", "--nproc_per_node", "2", "--rdzv_backend", "c10d",
                  "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", rdzv_id,
                  "--max-restarts", "1", "--monitor-interval", "0.2"],
                 ["--dataset_path", str(data24), "--logdir", str(log), *FLAGS, "--resume", "auto"],
                 out)
    try:
        # train_samples.png is written at step 1 of every epoch, last_checkpoint.pth at an
        # epoch's end: a new train_samples.png after the first checkpoint means epoch 2 runs.
        # (mtime is read before the checkpoint test: a value read while there was no
        # checkpoint is epoch 1's.)
        epoch1_samples = None
        while True:
            if time.monotonic() > t0 + DEADLINE_S or proc.poll() is not None:
                pytest.fail(f"no epoch 2 to interrupt (exit {proc.poll()}):\n{read(out)[-3000:]}")
            m = mtime(samples)
            if not ckpt_path.exists():
                epoch1_samples = m
            elif m is not None and m != epoch1_samples:
                break
            time.sleep(0.02)
        rank0 = [pid for pid in children(proc.pid) if env_of(pid).get("RANK") == "0"]
        assert len(rank0) == 1, children(proc.pid)
        os.kill(rank0[0], signal.SIGKILL)
        killed_at = load_checkpoint(str(ckpt_path))["epoch"]
        wait_all([proc], [out], t0 + DEADLINE_S)
    finally:
        kill_tree(proc)
    text = read(out)
    assert proc.returncode == 0, text[-4000:]
    assert killed_at == 1, "the kill came after epoch 2's checkpoint"
    assert "will restart worker group" in text, text[-4000:]      # torchrun's agent, LOGLEVEL=INFO
    assert text.count(f"--resume auto: no last_checkpoint.pth in {log}") == 1  # the first group
    assert text.count(f"resumed from {ckpt_path}: epoch 1, iteration {ITERS},") == 1, text[-4000:]
    assert text.count("weights identical on all 2 ranks") == 1
    rows = metrics(log)
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))   # each epoch once
    assert not [n for n in os.listdir(log) if ".tmp" in n]   # the killed writer's temp files
    final = load_checkpoint(str(ckpt_path))
    assert final["epoch"] == EPOCHS and final["iteration"] == EPOCHS * ITERS

    # The same result as never having been interrupted: bit-identical weights and buffers,
    # optimiser state and metrics (loss means, val mIoU) of the uninterrupted 2-rank run.
    assert two_nodes["codes"] == [0, 0]
    ref_dir = next(d for d in two_nodes["logdirs"] if os.path.isfile(d / "last_checkpoint.pth"))
    ref = load_checkpoint(str(ref_dir / "last_checkpoint.pth"))
    assert final["state_dict"].keys() == ref["state_dict"].keys()
    for k, v in ref["state_dict"].items():
        assert torch.equal(final["state_dict"][k], v), k
    for k, v in ref["optimizer"]["state"].items():
        assert torch.equal(final["optimizer"]["state"][k]["momentum_buffer"], v["momentum_buffer"]), k
    assert final["best_miou"] == ref["best_miou"]
    assert rows == metrics(ref_dir)
    print(f"two nodes {two_nodes['seconds']:.1f} s; killed + restarted {time.monotonic() - t0:.1f} s")


def test_slurm_script_runs_one_torchrun_per_node(data24, tmp_path):
    """scripts/train_slurm.sh as sbatch would run it, on a one-node "allocation": `srun` and
    `scontrol` are stand-ins that run the node's command and name the node (127.0.0.1). Its
    torchrun meets at the head node, trains with NGPU=2 gloo ranks and `--resume auto`; a
    second submission of the same job (a requeue) continues from that checkpoint."""
    from conftest import require_installed_venv
    require_installed_venv()  # the script runs .venv/bin/torchrun and never installs
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "scontrol").write_text('#!/bin/sh\n[ "$1 $2" = "show hostnames" ] && echo 127.0.0.1\n')
    (fake / "srun").write_text('#!/bin/sh\n[ "$1" = --kill-on-bad-exit=1 ] || exit 9\nshift\nexec "$@"\n')
    for f in fake.iterdir():
        f.chmod(0o755)
    log = tmp_path / "log"
    env = dict(os.environ, PATH=f"{fake}{os.pathsep}{os.environ['PATH']}", OMP_NUM_THREADS="1",
               SLURM_SUBMIT_DIR=REPO, SLURM_JOB_NODELIST="node[1]", SLURM_NNODES="1",
               SLURM_JOB_ID=uuid.uuid4().hex[:8], NGPU="2", PORT=str(free_port()), MAX_RESTARTS="0",
               DATA=str(data24), PSEUDO="pseudo_label", LOGDIR=str(log))
    for epochs in (1, 2):
        out = tmp_path / f"slurm{epochs}.out"
        with open(out, "w") as f:  # sh from /tmp: the script finds the repo by SLURM_SUBMIT_DIR
            proc = subprocess.Popen(["sh", os.path.join(REPO, "scripts", "train_slurm.sh"), *FLAGS,
                                     "--epochs", str(epochs), "--resume_override"],
                                    cwd=tmp_path, env=env, stdout=f, stderr=subprocess.STDOUT)
        wait_all([proc], [out], time.monotonic() + DEADLINE_S)
        text = read(out)
        assert proc.returncode == 0, text[-3000:]
        ckpt = load_checkpoint(str(log / "last_checkpoint.pth"))
        assert (ckpt["epoch"], ckpt["iteration"], ckpt["args"]["world_size"]) == (epochs, epochs * ITERS, 2)
        assert ckpt["args"]["model_type"] == "deeplabv2" and ckpt["args"]["layers"] == 18  # flags win
    assert f"resumed from {log / 'last_checkpoint.pth'}: epoch 1, iteration {ITERS}," in text, text[-3000:]
    assert [int(r["epoch"]) for r in metrics(log)] == [1, 2]
