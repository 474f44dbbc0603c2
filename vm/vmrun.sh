#!/usr/bin/env bash
# Boot the patched kernel (vm/build-kernel.sh) with virtme-ng and run one
# command in the guest, from the checkout; its exit code comes back.
#   vm/vmrun.sh [--out DIR] COMMAND [ARGS...]
# The checkout is shared read-only.  The command writes its results to
# $UPTRKV_VM_OUT (a directory shared read-write, outside the checkout),
# which is copied to DIR (default build/vm-out) afterwards.  bpffs is
# mounted first.  Single-threaded TCG: with QEMU's default multi-threaded
# TCG the guest panicked at random while tracepoint programs were attached
# (NOTES.md).  Used by `make bench-vm`; vm/vmtest.sh runs the test suite.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
out=$top/build/vm-out
if [ "${1:-}" = "--out" ]; then
    out=$2
    shift 2
fi
[ $# -gt 0 ] || { sed -n '2,11p' "$0" >&2; exit 2; }
mkdir -p "$out"
out=$(cd "$out" && pwd)
# Inside the read-only checkout a read-write share would be hidden: use /tmp.
shared=$(mktemp -d /tmp/uptrkv-vmrun.XXXXXX)
trap 'rm -rf "$shared"' EXIT
export PATH=${VENV_BIN:-$top/.venv/bin}:$PATH

bzimage=$("$here/build-kernel.sh")
# The command, quoted for the guest's shell.
cmd=$(printf '%q ' "$@")
guest="mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf; cd $(printf '%q' "$top") || exit 1;
echo \"guest kernel: \$(uname -r)\"; export UPTRKV_VM_OUT=$(printf '%q' "$shared"); $cmd; echo \$? > $(printf '%q' "$shared")/.rc"
echo "[vmrun] booting $bzimage under TCG: $cmd" >&2
set +e
timeout -k 10 "${VM_TIMEOUT:-1800}" vng --disable-kvm --cpus "${VM_CPUS:-2}" --memory "${VM_MEMORY:-2G}" \
    -r "$bzimage" --rodir="$top" --rwdir="$shared" --qemu-opts="-accel tcg,thread=single" \
    --exec "$guest" < /dev/null
vng_rc=$?
set -e
if [ ! -f "$shared/.rc" ]; then
    echo "[vmrun] error: the guest did not report an exit code (vng exit code $vng_rc)" >&2
    exit 1
fi
rc=$(cat "$shared/.rc")
rm -f "$shared/.rc"
cp -r "$shared"/. "$out"/
echo "[vmrun] guest exit code $rc; results in $out" >&2
exit "$rc"
