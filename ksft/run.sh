#!/bin/sh
# The test suite (or the pytest arguments given) under pytest, reported as
# KTAP v1 on stdout, exiting with kselftest's codes: 0 pass, 1 fail, 4 skip.
#   ksft/run.sh [pytest args]      (make kselftest; ./run kselftest)
# KSFT_PYTHON: the interpreter (default: the checkout's .venv).
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
[ $# -gt 0 ] || set -- tests
PYTHONPATH="$top:$top/ksft${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1 \
    exec "${KSFT_PYTHON:-$top/.venv/bin/python}" -m pytest -p uptrkv_ktap -p no:terminal \
    -p no:cacheprovider "$@"
