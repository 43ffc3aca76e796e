"""The pins people install from agree: requirements.txt (pip/.venv) and cdsp.yaml (conda); the
optional CRF pin (requirements-crf.txt) with pyproject.toml's `crf` extra, cdsp.yaml's comment
and the hint `eval.py --crf` prints without it."""
import os
import re

import pytest
import yaml

from conftest import crf_required

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIN = re.compile(r"([A-Za-z0-9_.\-]+)==(\S+)$")


def _requirements(name: str = "requirements.txt") -> dict:
    pins = {}
    for line in open(os.path.join(REPO, name)):
        line = line.split("#")[0].strip()
        if line:
            match = PIN.match(line)
            assert match, f"{name}: '{line}' is not pinned with =="
            pins[match.group(1).lower()] = match.group(2)
    return pins


def test_every_requirement_is_pinned_and_conda_env_matches():
    req = _requirements()
    env = yaml.safe_load(open(os.path.join(REPO, "cdsp.yaml")))
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    conda = dict(re.match(r"([^=<>]+)==(.+)", s).groups() for s in pip_section)
    assert {k.lower(): v for k, v in conda.items()} == req


def test_the_crf_pin_agrees_everywhere_and_stays_out_of_requirements_txt():
    crf = _requirements("requirements-crf.txt")
    assert crf == {"pydensecrf2": crf.get("pydensecrf2")} and crf["pydensecrf2"]
    assert not set(crf) & set(_requirements())  # a failed build must not stop the rest
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        extra = tomllib.load(f)["project"]["optional-dependencies"]["crf"]
    assert {m.group(1).lower(): m.group(2) for m in map(PIN.match, extra)} == crf
    # cdsp.yaml: commented out under pip (no compiler needed to create the env)
    commented = dict(re.findall(r"^\s*#\s*-\s*([A-Za-z0-9_.\-]+)==(\S+)\s*$",
                                open(os.path.join(REPO, "cdsp.yaml")).read(), re.M))
    assert {k.lower(): v for k, v in commented.items()} == crf
    from utils.crf import INSTALL_HINT
    assert f"pydensecrf2=={crf['pydensecrf2']}" in INSTALL_HINT


def test_installed_versions_are_the_pins():
    from importlib.metadata import PackageNotFoundError, version
    # scripts/test_torch211.sh runs the suite under the oldest supported torch on purpose
    other_torch = os.environ.get("CDSP_TEST_TORCH") == "2.11"
    for name, pinned in _requirements().items():
        if other_torch and name in ("torch", "torchvision"):
            continue
        assert version(name).split("+")[0] == pinned, name
    for name, pinned in _requirements("requirements-crf.txt").items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            if crf_required():
                raise
            continue  # optional (scripts/env.sh warned); its tests skip
        assert installed.split("+")[0] == pinned, name
