"""Workers die with their tool (utils/parallel.py): a tool killed with SIGKILL mid-run leaves no
worker process alive 5 s later, whether its workers are DataLoader workers (eval.py,
make_pseudo_labels.py label, train.py) or a process pool's (the datasets.* tools); and every
loader and pool the repository's code starts comes from utils/parallel.py."""
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from models import build_model
from utils.parallel import _alive, data_loader, die_with_parent, process_pool

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRACE_S = 5.0
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")


def _parents() -> dict[int, int]:
    """{pid: parent pid} of every process."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    out[int(name)] = int(f.read().rpartition(b")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return out


def _descendants(pid: int) -> set[int]:
    parents, found, todo = _parents(), set(), [pid]
    while todo:
        p = todo.pop()
        children = {c for c, pp in parents.items() if pp == p}
        found |= children
        todo.extend(children)
    return found


def _python_workers(pid: int) -> set[int]:
    """The tool's descendants that are Python processes (its workers; a forkserver and the
    multiprocessing resource tracker count too: they must go as well)."""
    out = set()
    for d in _descendants(pid):
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if b"python" in f.read():
                    out.add(d)
        except OSError:
            pass
    return out


def kill_mid_run(argv: list[str], ready, settle_s: float = 1.0, timeout_s: float = 120) -> set[int]:
    """Start `python argv` in REPO, SIGKILL it `settle_s` after ready(proc) first holds; return
    the pids of its descendants (seen just before the kill) still alive GRACE_S later."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    proc = subprocess.Popen([sys.executable, *argv], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout_s
        while not ready(proc):
            if proc.poll() is not None:
                pytest.fail(f"{argv[0]} ended before it was ready to kill: {proc.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{argv[0]}: not ready to kill after {timeout_s} s")
            time.sleep(0.05)
        time.sleep(settle_s)
        assert proc.poll() is None, f"{argv[0]} finished before it could be killed mid-run"
        seen = _descendants(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed = time.monotonic()
        while time.monotonic() - killed < GRACE_S and any(_alive(p) for p in seen):
            time.sleep(0.05)
        return {p for p in seen if _alive(p)}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def has_workers(n: int):
    return lambda proc: len(_python_workers(proc.pid)) >= n


def says_ready(proc) -> bool:
    return proc.stdout.readline().strip() == "ready"  # blocks until the line (or the end)


def _cleanup(pids):
    for p in pids:  # only the test's own strays, by pid
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.pth"
    torch.save({"state_dict": build_model("deeplabv2", 18, 6, lorm=False).state_dict(), "epoch": 1,
                "args": {"model_type": "deeplabv2", "layers": 18, "numclasses": 6}}, path)
    return str(path)


def test_label_dataloader_workers_die_with_make_pseudo_labels(tmp_path, make_synthetic):
    """The audit's case: `label --workers 2`, whose samples (numpy images) go through the
    workers' queues by value."""
    from datasets.meta import load_meta
    from models.cam import build_cam_net
    root = make_synthetic(train=6, val=2, size=(128, 160))
    meta = load_meta(str(root))
    from stage1.classifier import CAMTask
    from utils.outputs import claim_output_dir
    torch.manual_seed(0)
    ckpt = tmp_path / "camlog" / "last_checkpoint.pth"  # in a classifier's log folder: label writes beside it
    claim_output_dir(str(ckpt.parent), CAMTask.tool).claim([ckpt.name])
    torch.save({"kind": "cam_classifier", "dataset_meta": meta.to_dict(), "epoch": 1,
                "args": {"layers": 18, "output_stride": 8},
                "state_dict": build_cam_net(18, meta.num_classes - 1, None, 8).state_dict()}, ckpt)
    left = kill_mid_run(["make_pseudo_labels.py", "label", "--dataset_path", root, "--checkpoint_path", str(ckpt),
                         "--out", str(tmp_path / "cam"), "--scales", "1", "2", "--workers", "2",
                         "--device", "cpu", "--preview", "0"], has_workers(2))
    _cleanup(left)
    assert not left, f"{len(left)} process(es) of make_pseudo_labels.py alive {GRACE_S} s after SIGKILL"


POOL_TOOL = """
import sys, time
from utils.parallel import process_pool
pool = process_pool(2, method=sys.argv[1])
pool.map(time.sleep, [0.2, 0.2], chunksize=1)  # both workers started
pool.map_async(time.sleep, [120, 120], chunksize=1)  # busy far longer than the grace
print("ready", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_busy_pool_workers_die_with_their_tool(method):
    """Without the rule a busy worker finishes its task (here 120 s) before it notices."""
    left = kill_mid_run(["-c", POOL_TOOL, method], says_ready, settle_s=0.2)
    _cleanup(left)
    assert not left, f"{len(left)} pool process(es) alive {GRACE_S} s after SIGKILL"


def test_distance_map_pool_workers_die_with_the_tool(tmp_path):
    from utils.io import save_png
    rng = np.random.default_rng(0)
    src = tmp_path / "pseudo"
    src.mkdir()
    for i in range(24):
        save_png((rng.random((40, 40)) * 4).astype(np.uint8).repeat(25, 0).repeat(25, 1), str(src / f"{i}.png"))
    left = kill_mid_run(["-m", "datasets.distance_map", "--kind", "pseudo", "--src", str(src),
                         "--dst", str(tmp_path / "maps"), "--workers", "2"], has_workers(4), settle_s=0.5)
    _cleanup(left)
    assert not left, f"{len(left)} process(es) of datasets.distance_map alive {GRACE_S} s after SIGKILL"


def test_a_worker_whose_tool_is_already_gone_leaves_at_once():
    """The race: the tool died before the worker asked for the signal (which then never comes)."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    worker = multiprocessing.get_context("spawn").Process(target=die_with_parent, args=(gone.pid,))
    worker.start()
    worker.join(10)
    assert worker.exitcode == 1
    alive = multiprocessing.get_context("spawn").Process(target=die_with_parent, args=(os.getpid(),))
    alive.start()
    alive.join(10)
    assert alive.exitcode == 0  # its tool (this process) lives: it goes on


# Starting worker processes anywhere but utils/parallel.py would bypass the rule.
STARTS_WORKERS = re.compile(r"\bDataLoader\(|\bPool\(|ProcessPoolExecutor|get_context\(|\bProcess\(")


def test_every_loader_and_pool_comes_from_utils_parallel():
    offenders = []
    for top, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("tests", "__pycache__")]
        for name in files:
            path = os.path.join(top, name)
            if name.endswith(".py") and os.path.relpath(path, REPO) != os.path.join("utils", "parallel.py"):
                with open(path, encoding="utf-8") as f:
                    offenders += [f"{os.path.relpath(path, REPO)}:{i}: {line.strip()}"
                                  for i, line in enumerate(f, 1) if STARTS_WORKERS.search(line)]
    assert not offenders, "use utils.parallel.data_loader / process_pool:\n" + "\n".join(offenders)


def test_data_loader_workers_run_the_callers_init_too():
    seen = []
    loader = data_loader(list(range(4)), batch_size=None, num_workers=0, worker_init_fn=seen.append)
    assert list(loader) == [0, 1, 2, 3]
    init = loader.worker_init_fn
    assert init.tool == os.getpid()
    init(7)
    assert seen == [7]
