"""The pins people install from agree: requirements.txt (pip/.venv) and cdsp.yaml (conda)."""
import os
import re

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _requirements() -> dict:
    pins = {}
    for line in open(os.path.join(REPO, "requirements.txt")):
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.txt: '{line}' is not pinned with =="
            pins[name.lower()] = version
    return pins


def test_every_requirement_is_pinned_and_conda_env_matches():
    req = _requirements()
    env = yaml.safe_load(open(os.path.join(REPO, "cdsp.yaml")))
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    conda = dict(re.match(r"([^=<>]+)==(.+)", s).groups() for s in pip_section)
    assert {k.lower(): v for k, v in conda.items()} == req


def test_installed_versions_are_the_pins():
    from importlib.metadata import version
    for name, pinned in _requirements().items():
        assert version(name).split("+")[0] == pinned, name
