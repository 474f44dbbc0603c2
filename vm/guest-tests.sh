#!/bin/sh
# Runs inside the guest (through vm/guest-run.sh): the pytest suite on the
# host's tree (shared read-only), with the patched kernel required and both
# copy paths expected. Tests the host's run covers as well as the VM would
# are left to it: pure-Python ones (nokernel) and the CLI's (userspace).
# make vmtest-all (a host kernel without uptr) passes its own -m, running
# them here too. The output is also kept in $UPTRKV_RESULTS/pytest.log for
# the host's summary.
top=$(cd "$(dirname "$0")/.." && pwd)
[ $# -gt 0 ] || set -- tests
UPTRKV_REQUIRE_KERNEL=1 UPTRKV_EXPECT_DYNPTR=1 PYTHONDONTWRITEBYTECODE=1 \
    "$top/.venv/bin/python" -m pytest -ra -p no:cacheprovider -m "not nokernel and not userspace and not vmhost" --durations=25 "$@" \
    > "$UPTRKV_RESULTS/pytest.log" 2>&1
rc=$?
cat "$UPTRKV_RESULTS/pytest.log"
exit $rc
