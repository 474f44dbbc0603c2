#!/usr/bin/env bash
# Boot the patched kernel and run the test suite in it (vm/vmrun.sh runs
# vm/guest-tests.sh in the guest); the guest's pytest summary and exit code
# are reported here. A guest death, a timeout or any kernel report in the
# console fails the run (see vm/vmrun.sh); nothing is booted twice.
#   vm/vmtest.sh [pytest args]     run the suite (or the given tests) in the guest
#   vm/vmtest.sh --shell           an interactive shell in the guest instead
# VM_MARKERS selects tests by marker (pass it, not -m). By default the guest
# leaves to the host run what it covers as well: pure-Python tests
# (nokernel) and those whose addition is user space's (userspace); make
# vmtest-all sets VM_MARKERS="not vmhost" to run them here too.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
if [ "${1:-}" = "--shell" ]; then
    exec "$here/vmrun.sh" --shell
fi
results=$(mktemp -d /tmp/uptrkv-vmtest.XXXXXX)
trap 'rm -rf "$results"' EXIT
set +e
VM_RESULTS=$results "$here/vmrun.sh" sh vm/guest-tests.sh \
    "${VM_MARKERS:-not nokernel and not userspace and not vmhost}" "$@"
rc=$?
set -e
if [ "$rc" -ne 0 ] && [ -s "$results/pytest.log" ] && ! grep -q ' in [0-9.]*s' "$results/pytest.log"; then
    echo "vmtest: the guest's pytest output ends:" >&2     # cut short by a death or a timeout
    tail -n 40 "$results/pytest.log" >&2
fi
summary=$(grep -E '(passed|failed|error).* in [0-9.]+s' "$results/pytest.log" 2>/dev/null | tail -n 1 | tr -d '=' || true)
count() { grep -oE "[0-9]+ $1" <<<"$summary" | cut -d' ' -f1 | grep . || echo 0; }
echo "vmtest: ${summary:-no pytest summary} (exit $rc)"
echo "vmtest: $(count passed) passed, $(count failed) failed, $(count error) errors, vmrun exit $rc"
exit "$rc"
