#!/bin/sh
# The README's test command: sets up .venv (first run only) and runs the whole suite on CPU.
# Extra arguments go to pytest, e.g. `sh scripts/test.sh -k distance -x`.
. "$(dirname -- "$0")/env.sh"
exec python -m pytest "$@"
