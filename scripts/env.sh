# Sourced by the other scripts: make sure .venv exists in the repo root and holds exactly
# the pinned requirements, then activate it. Re-installs only when requirements.txt changes.
# PYTHON picks the interpreter that creates the venv (default: python3.11 if present).
set -e
REPO_ROOT=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
cd "$REPO_ROOT"
if [ -z "${PYTHON:-}" ]; then
    if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi
if [ ! -x .venv/bin/python ]; then
    echo "[env] creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv
fi
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat .venv/.requirements.sha256 2>/dev/null)" != "$want" ]; then
    echo "[env] installing pinned requirements into .venv (torch is large: the first time takes a while)"
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
    echo "$want" > .venv/.requirements.sha256
fi
. .venv/bin/activate
