#!/bin/sh
# The test suite (or the pytest arguments given) under pytest, reported as
# KTAP v1 on stdout, exiting with kselftest's codes: 0 pass, 1 fail (or no
# test outcome: a Bail out! line says why), 4 all skipped.
#   ksft/run.sh [pytest args]      (make kselftest; ./run kselftest)
# uptrkv_ktap.py runs pytest in process and maps its exit code.
# KSFT_PYTHON: the interpreter (default: the checkout's .venv).
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
[ $# -gt 0 ] || set -- tests
PYTHONPATH="$top:$top/ksft${PYTHONPATH:+:$PYTHONPATH}" PYTHONDONTWRITEBYTECODE=1 \
    exec "${KSFT_PYTHON:-$top/.venv/bin/python}" -m uptrkv_ktap "$@"
