"""Shared fixtures: a tiny synthetic dataset in the ScribbleSup layout (SPEC §1, datasets/synthetic.py).

- `synthetic_root`: generated once per session (6 train + 3 val images of 64x80, K=5
  foreground classes, seed 0; its dataset.yaml lists 6 classes: background, aeroplane, ...,
  bottle). Read-only: a test that modifies data uses `make_synthetic`.
- `synthetic_summary`: what `generate()` returned for it (params, class names, statistics).
- `make_synthetic(**kw)`: a fresh set in a new temporary directory; keyword arguments
  override `SYNTHETIC_SMALL` (train, val, size, seed, num_classes).

Roots are `SyntheticRoot`: a str path that also supports `/` like pathlib.Path. The
pseudo-label folder is `datasets.layout.PSEUDO_SYNTHETIC` ("pseudo_label").
"""
from __future__ import annotations

import hashlib
import os
import pathlib

import pytest

from datasets.synthetic import generate

SYNTHETIC_SMALL = dict(train=6, val=3, size=(64, 80), seed=0, num_classes=5)


class SyntheticRoot(str):
    """A dataset root: a str (os.path, Layout, CLI arguments) that also takes `/`."""

    def __truediv__(self, other) -> pathlib.Path:
        return pathlib.Path(self) / other


def _generate(tmp_path_factory, **kw) -> tuple[SyntheticRoot, dict]:
    root = tmp_path_factory.mktemp("synthetic") / "VOC"
    summary = generate(str(root), progress=False, **{**SYNTHETIC_SMALL, **kw})
    return SyntheticRoot(root), summary


@pytest.fixture(scope="session")
def _synthetic_session(tmp_path_factory):
    return _generate(tmp_path_factory)


@pytest.fixture(scope="session")
def synthetic_root(_synthetic_session) -> SyntheticRoot:
    return _synthetic_session[0]


@pytest.fixture(scope="session")
def synthetic_summary(_synthetic_session) -> dict:
    return _synthetic_session[1]


@pytest.fixture
def make_synthetic(tmp_path_factory):
    def make(**kw) -> SyntheticRoot:
        return _generate(tmp_path_factory, **kw)[0]
    return make


def require_installed_venv() -> None:
    """Skip a test that runs a scripts/*.sh when sourcing scripts/env.sh would (re)install .venv."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    want = hashlib.sha256(open(os.path.join(repo, "requirements.txt"), "rb").read()).hexdigest()
    stamp = os.path.join(repo, ".venv", ".requirements.sha256")
    if not os.path.isfile(stamp) or open(stamp).read().strip() != want:
        pytest.skip("scripts/env.sh would (re)install .venv; not from a test")


def torchrun(script: str, argv: list[str], nproc: int = 2, timeout: float = 300,
             extra: list[str] | None = None):
    """`python -m torch.distributed.run` of a repo script with `nproc` gloo processes on a free
    loopback port; returns (CompletedProcess, seconds). A hang fails the test at `timeout`."""
    import socket
    import subprocess
    import sys
    import time
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=repo)
    with socket.socket() as s:  # a free port: other test runs may use torchrun at the same time
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_addr", "127.0.0.1", "--master_port", str(port), *(extra or []),
           os.path.join(repo, script), *argv]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, cwd=repo, capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - t0


def crf_required() -> bool:
    """CI=true or CDSP_REQUIRE_CRF=1, as in scripts/env.sh: pydensecrf2 must be installed, so its
    tests fail instead of skipping."""
    return os.environ.get("CI", "").lower() in ("true", "1") or os.environ.get("CDSP_REQUIRE_CRF") == "1"


def corrupt_file(path) -> None:
    """Truncate a file to 40 bytes: an image or checkpoint that no reader can decode."""
    with open(path, "r+b") as f:
        f.truncate(40)


def main_with_file_size_limit(module: str, argv: list[str], limit: int, timeout: float = 300):
    """`module.main(argv)` in a fresh process whose file-size limit is `limit` bytes: every write
    past it fails the way a full disk does (the kernel's EFBIG instead of ENOSPC). Returns the
    CompletedProcess (text output)."""
    import subprocess
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (f"import resource, signal, sys\n"
            f"signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
            f"from {module} import main\n"
            f"sys.exit(main({[str(a) for a in argv]!r}))\n")
    return subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, PYTHONPATH=repo))
