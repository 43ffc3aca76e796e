"""Every command the README and docs/ show is one that runs: each documented module, script and
flag exists, and every link between the pages lands (a file, and a heading for #anchors).

Commands are read from fenced code blocks (continuation lines joined) and from inline code
spans: `python -m MODULE`, `python [path/]FILE.py` (also after torchrun and .venv/bin/), and
`sh scripts/NAME.sh`. A tool's flags are those its `--help` prints (run in this process with
runpy, so torch is imported once); a script's flags are those of the tools it calls.
"""
from __future__ import annotations

import contextlib
import glob
import io
import os
import re
import runpy
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md")))

TOOL = re.compile(r"(?:python3?|\.venv/bin/python|torchrun)\s+(?:[^|`]*?\s)?(-m\s+[\w.]+|[\w./-]+\.py)\b(.*)")
SCRIPT = re.compile(r"\bsh\s+(scripts/[\w.-]+\.sh)\b(.*)")
FLAG = re.compile(r"(?<![\w-])--[a-zA-Z][\w-]*")
SUBCOMMAND = re.compile(r"\s*([a-z_]+)(?:\\?\|([a-z_]+))*")


def _segments(text: str) -> list[str]:
    """Code: each fenced block's lines (with `\\` continuations joined), then inline spans."""
    out = []
    for block in re.findall(r"```[^\n]*\n(.*?)```", text, re.S):
        out += [ln.split(" #")[0] for ln in block.replace("\\\n", " ").splitlines()]
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    out += re.findall(r"`([^`\n]+)`", prose)
    return out


def documented() -> dict[tuple[str, str, str], set[str]]:
    """{(page, kind, target): flags}: kind "tool" (target "-m mod", "path.py" or with " sub") or "script"."""
    found: dict = {}
    for page in PAGES:
        for seg in _segments(open(os.path.join(REPO, page), encoding="utf-8").read()):
            for m in TOOL.finditer(seg):
                target, rest = m.group(1), m.group(2)
                rest = rest.split("&&")[0].split(";")[0].split(" | ")[0]
                if target == "-m pytest" or target.startswith("-m pip") or target.startswith("-m venv"):
                    continue
                sub = SUBCOMMAND.match(rest) if target.endswith("make_pseudo_labels.py") else None
                for s in ([g for g in sub.groups() if g] if sub else [None]):
                    key = (page, "tool", target + (f" {s}" if s else ""))
                    found.setdefault(key, set()).update(FLAG.findall(rest))
            for m in SCRIPT.finditer(seg):
                found.setdefault((page, "script", m.group(1)), set()).update(FLAG.findall(m.group(2)))
    return found


_HELP: dict[str, str] = {}


def help_text(target: str) -> str:
    """What `python <target> --help` prints (runpy in this process)."""
    if target in _HELP:
        return _HELP[target]
    parts = target.split()
    if parts[0] == "-m":
        argv, run = [parts[1], *parts[2:], "--help"], lambda: runpy.run_module(parts[1], run_name="__main__")
    else:
        path = os.path.join(REPO, parts[0])
        assert os.path.isfile(path), f"{parts[0]}: no such file"
        argv, run = [path, *parts[1:], "--help"], lambda: runpy.run_path(path, run_name="__main__")
    out, saved = io.StringIO(), (sys.argv, list(sys.path))
    sys.argv = argv
    sys.path.insert(0, REPO)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            with pytest.raises(SystemExit):
                run()
    finally:
        sys.argv, sys.path[:] = saved
    _HELP[target] = out.getvalue()
    return _HELP[target]


def script_tools(script: str) -> list[str]:
    """The repo tools a scripts/*.sh runs (`python -m X`, `python X.py`, torchrun X.py)."""
    text = open(os.path.join(REPO, script), encoding="utf-8").read()
    tools = []
    for m in re.finditer(r"(?:python3?|torchrun)\b[^\n]*?\s(-m\s+[\w.]+|[\w./-]+\.py)\b([^\n]*)", text):
        target = m.group(1)
        if target.endswith("make_pseudo_labels.py"):
            sub = re.match(r"\s*(train|label)\b", m.group(2))
            target += f" {sub.group(1)}" if sub else ""
        if "pytest" not in target and target != "-m torch.distributed.run":
            tools.append(target)
    return tools


DOCUMENTED = documented()


def test_the_pages_document_commands():
    kinds = {k for _, k, _ in DOCUMENTED}
    assert kinds == {"tool", "script"} and len(DOCUMENTED) > 40, sorted(DOCUMENTED)[:10]
    assert any(t == "-m datasets.prepare_scribblesup" for _, _, t in DOCUMENTED)


@pytest.mark.parametrize("page,kind,target", sorted(DOCUMENTED))
def test_documented_command_exists_with_its_flags(page, kind, target):
    flags = DOCUMENTED[(page, kind, target)]
    if kind == "script":
        assert os.path.isfile(os.path.join(REPO, target)), f"{page}: {target} does not exist"
        tools = script_tools(target)
        known = set().union(*(FLAG.findall(help_text(t)) for t in tools)) if tools else set()
    else:
        known = set(FLAG.findall(help_text(target)))
        assert known, f"{page}: `{target} --help` printed no flags"
    missing = sorted(flags - known - {"--help"})
    assert not missing, f"{page}: `{target}` has no {', '.join(missing)}"


def _anchors(path: str) -> set[str]:
    """GitHub's heading slugs of a markdown file."""
    slugs = set()
    for line in open(path, encoding="utf-8"):
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            slugs.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return slugs


@pytest.mark.parametrize("page", PAGES)
def test_links_between_pages_land(page):
    text = open(os.path.join(REPO, page), encoding="utf-8").read()
    here = os.path.dirname(os.path.join(REPO, page))
    bad = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(here, path)) if path else os.path.join(REPO, page)
        if not os.path.exists(full):
            bad.append(target)
        elif anchor and full.endswith(".md") and anchor not in _anchors(full):
            bad.append(target)
    assert not bad, f"{page}: links that do not land: {bad}"


def test_readme_fits_on_two_screens():
    lines = open(os.path.join(REPO, "README.md"), encoding="utf-8").read().splitlines()
    assert len(lines) <= 130, len(lines)
