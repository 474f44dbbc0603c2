#!/usr/bin/env bash
# Install the test suite as kselftest collection "uptrkv" under DIR, for the
# kernel's own runner:
#
#   ksft/install.sh DIR            (make kselftest-install INSTALL_PATH=DIR)
#   DIR/run_kselftest.sh [-c uptrkv | -t uptrkv:test_store_space]
#
# DIR gets the runner (run_kselftest.sh, kselftest/) from the kernel source
# that vm/kernel-source.sh fetches (or KSFT_SRC=/path/to/linux) unless DIR
# already has one, a copy of the package, tests and built BPF objects, and one
# executable per test module that prints KTAP v1 and exits 0 (pass), 1 (fail)
# or 4 (skip).  "uptrkv:" lines in DIR/kselftest-list.txt are replaced, other
# collections' lines kept, so DIR may be a kernel kselftest install.
#
# The executables run pytest with the interpreter given by PYTHON at install
# time (default: this checkout's .venv, which has pytest and pyelftools), or
# KSFT_PYTHON at run time.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
die() { printf '[kselftest-install] error: %s\n' "$*" >&2; exit 1; }

[ $# -eq 1 ] && [ -n "$1" ] || die "usage: $0 INSTALL_PATH"
mkdir -p "$1"
dest=$(cd "$1" && pwd)
python=${PYTHON:-$top/.venv/bin/python}
case "$python" in /*) ;; *) python=$(command -v "$python") || die "no interpreter $python" ;; esac
"$python" -c 'import pytest, elftools' 2>/dev/null ||
    die "$python lacks pytest or pyelftools (run ./run bpf, or set PYTHON=)"
ls "$top"/build/bpf/*.bpf.o >/dev/null 2>&1 || die "no BPF objects in $top/build/bpf (run make bpf)"

if [ ! -f "$dest/run_kselftest.sh" ] || [ ! -f "$dest/kselftest/runner.sh" ]; then
    if [ -n "${KSFT_SRC:-}" ]; then
        src=$KSFT_SRC
    else
        # Under the kernel build lock (vm/build-kernel.sh takes it too) until
        # the runner is copied: the first call unpacks the tree, and a
        # changed series is switched in place, neither of which may happen
        # under a running build or another install.
        cache=${UPTRKV_CACHE:-/var/cache/uptrkv}
        mkdir -p "$cache"
        exec 9> "$cache/build.lock"
        if ! flock -n 9; then
            echo "[kselftest-install] a kernel build (or another install) holds $cache/build.lock: waiting for it" >&2
            flock 9
        fi
        src=$("$top/vm/kernel-source.sh")
    fi
    sel=$src/tools/testing/selftests
    [ -f "$sel/run_kselftest.sh" ] && [ -f "$sel/kselftest/runner.sh" ] ||
        die "$src has no kselftest runner (tools/testing/selftests/run_kselftest.sh)"
    mkdir -p "$dest/kselftest"
    for f in "$sel"/kselftest/*; do
        [ -f "$f" ] && install -m 744 "$f" "$dest/kselftest/"
    done
    install -m 744 "$sel/run_kselftest.sh" "$dest/"
    exec 9>&-                                  # the lock, if taken
fi

coll=$dest/uptrkv
rm -rf "$coll"
mkdir -p "$coll/tree/build"
cp -r "$top/uptrkv" "$top/tests" "$top/examples" "$top/ksft" "$top/pyproject.toml" "$coll/tree/"
cp -r "$top/build/bpf" "$coll/tree/build/bpf"
find "$coll/tree" -name __pycache__ -prune -exec rm -rf {} +

# The BPF tests need more than kselftest's default 45 s under emulation.
echo "timeout=900" > "$coll/settings"

cat > "$coll/run_pytest" <<EOF
#!/bin/sh
# uptrkv tests under pytest: KTAP v1 output, kselftest exit codes.
KSFT_PYTHON=\${KSFT_PYTHON:-$python} exec "\$(dirname "\$0")/tree/ksft/run.sh" "\$@"
EOF
chmod 755 "$coll/run_pytest"

list=$dest/kselftest-list.txt
touch "$list"
grep -v '^uptrkv:' "$list" > "$list.tmp" || true
for t in "$top"/tests/test_*.py; do
    name=$(basename "$t" .py)
    printf '#!/bin/sh\nexec "$(dirname "$0")/run_pytest" tests/%s.py "$@"\n' "$name" > "$coll/$name"
    chmod 755 "$coll/$name"
    echo "uptrkv:$name" >> "$list.tmp"
done
mv "$list.tmp" "$list"
echo "[kselftest-install] collection uptrkv ($(grep -c '^uptrkv:' "$list") tests) in $dest; run $dest/run_kselftest.sh -c uptrkv" >&2
