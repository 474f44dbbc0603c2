#!/usr/bin/env bash
# Run CI from fresh clones N times in a row and tally the results.
#
#   vm/ci-repeat.sh [N=20] [REPO=this checkout]
#
# Each run clones REPO's HEAD into a new temporary directory and runs
# `CI=true bash .ci/run` there with no stdin (the kernel cache under
# $UPTRKV_CACHE is shared, so only the first run may build). Per run it
# records the exit code, the wall time, how many guest boots it made and
# whether the harness saw a kernel report; every run's output is kept in
# build/ci-repeat/run-<n>.log of this checkout. Exit 0 only if all passed.
set -uo pipefail
n=${1:-20}
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
repo=${2:-$top}
logs=$top/build/ci-repeat
mkdir -p "$logs"
pass=0
for i in $(seq 1 "$n"); do
    dir=$(mktemp -d /tmp/uptrkv-ci.XXXXXX)
    git clone -q "$repo" "$dir/uptrkv"
    t0=$SECONDS
    (cd "$dir/uptrkv" && CI=true bash .ci/run < /dev/null) > "$logs/run-$i.log" 2>&1
    rc=$?
    secs=$((SECONDS - t0))
    boots=$(grep -c '^\[vmrun .*\] booting ' "$logs/run-$i.log")
    reports=$(grep -c 'kernel report(s) in the console' "$logs/run-$i.log")
    summary=$(grep -E '^vmtest: [0-9]+ passed' "$logs/run-$i.log" | tail -n1)
    host=$(grep -E '^=+ .*(passed|failed).* in [0-9.]+s' "$logs/run-$i.log" | head -n1 | tr -d '=')
    [ "$rc" -eq 0 ] && pass=$((pass + 1))
    printf 'run %2d/%d: exit %d, %4d s, %d boot(s), %d kernel report(s); host:%s; %s\n' \
        "$i" "$n" "$rc" "$secs" "$boots" "$reports" "$host" "${summary:-no vmtest summary}"
    rm -rf "$dir"
done
printf 'ci-repeat: %d of %d runs passed\n' "$pass" "$n"
[ "$pass" -eq "$n" ]
