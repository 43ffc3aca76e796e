#!/bin/sh
# The suite under the oldest torch we support, the GPU machines' torch 2.11 / torchvision 0.26,
# in .venv-torch2.11 (first run only: PyPI's CUDA build, about 5 GB; the rest of the pins from
# requirements.txt). Not part of CI (size); run it after touching a torch API. Extra arguments
# go to pytest, e.g. `sh scripts/test_torch211.sh -k lorm`. Scripts the tests start (sh
# scripts/...) still use .venv.
set -e
cd "$(dirname -- "$0")/.."
V=.venv-torch2.11
if [ -z "${PYTHON:-}" ]; then
    if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi
[ -x "$V/bin/python" ] || "$PYTHON" -m venv "$V"
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$V/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
    echo "[test_torch211] installing torch 2.11.0 / torchvision 0.26.0 and the other pins into $V"
    grep -v '^torch==\|^torchvision==' requirements.txt > "$V/requirements-rest.txt"
    "$V/bin/python" -m pip install -q --disable-pip-version-check torch==2.11.0 torchvision==0.26.0 \
        -r "$V/requirements-rest.txt"
    echo "$want" > "$V/.requirements.sha256"
fi
"$V/bin/python" -c "import torch, torchvision; print('[test_torch211] torch', torch.__version__, 'torchvision', torchvision.__version__)"
CDSP_TEST_TORCH=2.11 exec "$V/bin/python" -m pytest "$@"
