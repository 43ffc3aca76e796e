# Sourced by the other scripts: make sure .venv exists in the repo root and holds exactly
# the pinned requirements, then activate it. Re-installs only when requirements.txt changes.
# PYTHON picks the interpreter that creates the venv (default: python3.11 if present).
#
# The optional CRF extra (requirements-crf.txt: pydensecrf2 for `eval.py --crf`) is built from
# source with a C++ compiler (about a minute). It is tried when the sourcing script sets
# CDSP_WITH_CRF=1 (scripts/test.sh does, so the CRF tests run) or CDSP_REQUIRE_CRF=1, once per
# content of requirements-crf.txt (stamp .venv/.crf.sha256). A failed build warns and the rest
# of .venv works (the CRF tests are then skipped) and is not retried until requirements-crf.txt
# changes or the package can be imported; under CI=true or CDSP_REQUIRE_CRF=1 it fails instead.
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
if [ "${CDSP_WITH_CRF:-}" = 1 ] || [ "${CDSP_REQUIRE_CRF:-}" = 1 ]; then
    crf_required=0
    case "${CI:-}" in true|TRUE|True|1) crf_required=1 ;; esac
    [ "${CDSP_REQUIRE_CRF:-}" = 1 ] && crf_required=1
    crf_want=$(sha256sum requirements-crf.txt | cut -d' ' -f1)
    crf_stamp=$(cat .venv/.crf.sha256 2>/dev/null || true)
    crf_hint="a C++ compiler, then: .venv/bin/pip install -r requirements-crf.txt"
    if [ "$crf_stamp" = "$crf_want" ]; then
        :  # built before
    elif [ "$crf_stamp" = "failed $crf_want" ] && [ "$crf_required" = 0 ] \
            && ! .venv/bin/python -c "import pydensecrf.densecrf" 2>/dev/null; then
        echo "[env] warning: pydensecrf2 is not installed (its build failed before, see .venv/crf-build.log): CRF tests will be skipped; to run them: $crf_hint" >&2
    else
        echo "[env] installing the optional CRF extra (pydensecrf2, built from source with a C++ compiler: about a minute)"
        # -c requirements.txt: the extra can never move a pinned package
        if .venv/bin/python -m pip install --disable-pip-version-check -r requirements-crf.txt \
                -c requirements.txt >.venv/crf-build.log 2>&1 \
                && .venv/bin/python -c "import pydensecrf.densecrf" >>.venv/crf-build.log 2>&1; then
            echo "$crf_want" > .venv/.crf.sha256
        elif [ "$crf_required" = 1 ]; then
            tail -n 40 .venv/crf-build.log >&2
            echo "[env] error: the CRF extra (pydensecrf2, requirements-crf.txt) did not build; CI=true or CDSP_REQUIRE_CRF=1 needs it so the CRF tests cannot be skipped (full log: .venv/crf-build.log)" >&2
            exit 1
        else
            echo "failed $crf_want" > .venv/.crf.sha256
            echo "[env] warning: pydensecrf2 did not build (log: .venv/crf-build.log): CRF tests will be skipped; to run them: $crf_hint" >&2
        fi
    fi
fi
. .venv/bin/activate
