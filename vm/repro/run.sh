#!/usr/bin/env bash
# Boot the VM N times and run the tracepoint-toggle reproducer in each boot;
# tally clean runs, guest deaths and kernel reports.
#
#   vm/repro/run.sh single|multi [BOOTS=20] [SECONDS=30]
#
# Each boot's console is kept as build/repro/<mode>-<n>.log. Exit 0 only if
# every boot was clean.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
mode=${1:?usage: vm/repro/run.sh single|multi [BOOTS] [SECONDS]}
boots=${2:-20}
seconds=${3:-30}
mkdir -p "$top/build/repro"
clean=0 died=0 reported=0 other=0
for i in $(seq 1 "$boots"); do
    log=$top/build/repro/$mode-$i.log
    out=$(VM_TCG=$mode VM_TIMEOUT=$((seconds + 240)) VM_CONSOLE_LOG=$log \
          "$top/vm/vmrun.sh" .venv/bin/python vm/repro/tracepoint_toggle.py "$seconds" 2>&1)
    rc=$?
    result=$(grep -E '^repro: ' <<<"$out" | tail -n1)
    if [ $rc -eq 0 ]; then
        clean=$((clean + 1)); verdict="clean: ${result#repro: }"
    elif grep -q 'FAILED (.*kernel-report' <<<"$out"; then
        reported=$((reported + 1))
        verdict="KERNEL REPORT: $(grep -m1 -oE '(Oops|BUG|WARNING|Kernel panic)[^]]*' "$log" | head -c 120)"
        grep -q 'FAILED (death' <<<"$out" && { died=$((died + 1)); verdict="$verdict (guest died)"; }
    elif grep -q 'FAILED (death\|FAILED (timeout' <<<"$out"; then
        died=$((died + 1)); verdict="guest died or hung with no report"
    else
        other=$((other + 1)); verdict="reproducer failed (exit $rc)"
    fi
    printf 'repro %s boot %2d/%d: %s\n' "$mode" "$i" "$boots" "$verdict"
done
printf 'repro %s: %d boots, %d clean, %d with a kernel report, %d guest deaths, %d other failures\n' \
    "$mode" "$boots" "$clean" "$reported" "$died" "$other"
[ "$clean" -eq "$boots" ]
