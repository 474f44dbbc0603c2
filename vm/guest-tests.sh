#!/bin/sh
# Runs inside the guest (through vm/guest-run.sh): the pytest suite on the
# host's tree (shared read-only), with the patched kernel required and both
# copy paths expected. Its first argument is the marker expression (from
# vm/vmtest.sh's VM_MARKERS), the rest go to pytest. The output is also kept
# in $UPTRKV_RESULTS/pytest.log for the host's summary.
top=$(cd "$(dirname "$0")/.." && pwd)
markers=$1
shift
[ $# -gt 0 ] || set -- tests
UPTRKV_REQUIRE_KERNEL=1 UPTRKV_EXPECT_DYNPTR=1 PYTHONDONTWRITEBYTECODE=1 \
    "$top/.venv/bin/python" -m pytest -ra -p no:cacheprovider -m "$markers" --durations=25 "$@" \
    > "$UPTRKV_RESULTS/pytest.log" 2>&1
rc=$?
cat "$UPTRKV_RESULTS/pytest.log"
exit $rc
