#!/bin/sh
# Runs inside the virtme-ng guest: mount what the guest lacks, run pytest on
# the host's tree (shared read-only) and leave the exit code and output in
# the results directory the host shared read-write.
results=$1
shift
top=$(cd "$(dirname "$0")/.." && pwd)
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
cd "$top" || exit 1
echo "guest kernel: $(uname -r)"
[ $# -gt 0 ] || set -- tests
{
    UPTRKV_REQUIRE_KERNEL=1 UPTRKV_EXPECT_DYNPTR=1 PYTHONDONTWRITEBYTECODE=1 \
        "$top/.venv/bin/python" -m pytest -ra -p no:cacheprovider -m "not nokernel" "$@"
    echo $? > "$results/rc"
} 2>&1 | tee "$results/pytest.log"
exit "$(cat "$results/rc")"
