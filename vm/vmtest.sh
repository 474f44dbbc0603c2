#!/usr/bin/env bash
# Boot the patched kernel under QEMU with virtme-ng and run the test suite in
# it; the guest's pytest summary and exit code are reported here.
#   vm/vmtest.sh [pytest args]     run the suite (or the given tests) in the guest
#   vm/vmtest.sh --shell           an interactive shell in the guest instead
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
venv_bin=${VENV_BIN:-$top/.venv/bin}
export PATH=$venv_bin:$PATH
start=$SECONDS
log() { printf '[vmtest %4ds] %s\n' $((SECONDS - start)) "$*" >&2; }

bzimage=$("$here/build-kernel.sh")
# No hardware virtualisation on these machines: TCG. Without --disable-kvm
# QEMU tries KVM and hangs without output.
# The guest shares the host's root read-only, but /tmp, /home, /var and
# others are fresh overlays there: share the checkout itself at its path.
vng_args=(--disable-kvm --cpus "${VM_CPUS:-2}" --memory "${VM_MEMORY:-2G}" -r "$bzimage"
          --rodir="$top")

if [ "${1:-}" = "--shell" ]; then
    exec vng "${vng_args[@]}"
fi

console_log=$top/build/vmtest-console.log
mkdir -p "$(dirname "$console_log")"

# One boot: the guest runs the suite and leaves rc and pytest.log in $1.
# The whole console (kernel messages included) goes to $console_log; only
# the guest's own output (lines without a kernel timestamp) is shown.
# Through a pipe: QEMU reopens its output by path, which would truncate a
# file our caller redirected the host tests' output to.
# A guest that hangs (or never powers off) is stopped after VM_TIMEOUT seconds.
boot() {
    local results=$1
    shift
    log "booting $bzimage under TCG (console log: $console_log)"
    set +e
    timeout -k 10 "${VM_TIMEOUT:-1500}" vng "${vng_args[@]}" --verbose --rwdir="$results" \
        --exec "sh $here/guest-tests.sh $results $*" < /dev/null 2>&1 |
        tee "$console_log" | grep --line-buffered -vE '^\[ *[0-9]+\.[0-9]+\]'
    local vng_rc=${PIPESTATUS[0]}
    set -e
    [ "$vng_rc" -ne 124 ] || log "the guest did not finish within ${VM_TIMEOUT:-1500} s: stopped it"
    log "guest finished (vng exit code $vng_rc)"
}

results=$(mktemp -d /tmp/uptrkv-vm.XXXXXX)
trap 'rm -rf "$results"' EXIT
boot "$results" "$@"
if [ ! -f "$results/rc" ]; then
    # The guest died before the suite reported (a crash, not a test failure):
    # show why, keep that log, and boot once more.
    echo "[vmtest] the guest reported no result; its last kernel messages:" >&2
    grep -E '^\[ *[0-9]+\.[0-9]+\]' "$console_log" | tail -n 60 >&2 || true
    cp "$console_log" "$console_log.crash"
    echo "[vmtest] kept as $console_log.crash; booting again" >&2
    boot "$results" "$@"
fi
if [ ! -f "$results/rc" ]; then
    echo "[vmtest] error: the guest reported no result twice; see $console_log" >&2
    exit 1
fi
rc=$(cat "$results/rc")
summary=$(grep -E '(passed|failed|error).* in [0-9.]+s' "$results/pytest.log" | tail -n 1 | tr -d '=' || true)
log "guest pytest: ${summary:-no summary} (exit $rc)"
count() { grep -oE "[0-9]+ $1" <<<"$summary" | cut -d' ' -f1 || true; }
echo "vmtest: $(count passed | grep . || echo 0) passed, $(count failed | grep . || echo 0) failed"
exit "$rc"
