#!/bin/sh
# Runs inside the virtme-ng guest: mount what the guest lacks, run the
# command from the checkout and leave its exit code in the results
# directory the host shared read-write ($1). The rc file is the host's
# proof that the command finished: a guest that dies leaves none.
results=$1
shift
top=$(cd "$(dirname "$0")/.." && pwd)
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
# named stores keep their pages on tmpfs (the tests' runtime roots are under /dev/shm)
mkdir -p /dev/shm
mountpoint -q /dev/shm || mount -t tmpfs -o mode=1777 tmpfs /dev/shm
cd "$top" || exit 1
echo "guest kernel: $(uname -r)"
UPTRKV_RESULTS=$results "$@"
rc=$?
# Settle before the rc file (after it the guest powers off): the tests'
# last maps and task storage are freed from workqueues and RCU callbacks,
# and a report from that work must reach the console to be scanned. Wait
# until no BPF map is left (at most 10 s), then 1 s for the callbacks.
n=0
while [ "$n" -lt 20 ] && bpftool map show 2>/dev/null | grep -q '^[0-9]*:'; do
    sleep 0.5
    n=$((n + 1))
done
[ "$n" -lt 20 ] || echo "guest-run: BPF maps still exist 10 s after the command: $(bpftool map show | grep -c '^[0-9]*:')"
sleep 1
echo "$rc" > "$results/rc"
exit "$rc"
