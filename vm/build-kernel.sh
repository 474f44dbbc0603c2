#!/usr/bin/env bash
# Build (or reuse) a bzImage with the uptr dynptr patch; print its path.
#
# The image is cached under $UPTRKV_CACHE/kernels/<key>/ where the key hashes
# the kernel version, the patch, the config fragment and virtme-ng's version,
# so a second run reuses it and a changed patch or fragment rebuilds.
# A cold build on 2 cores takes minutes: progress (elapsed time, current
# step) goes to stderr and the full output to build.log beside the image.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
cache=${UPTRKV_CACHE:-/var/cache/uptrkv}
venv_bin=${VENV_BIN:-$top/.venv/bin}
jobs=${JOBS:-$(nproc)}
start=$SECONDS

log() { printf '[build-kernel %4ds] %s\n' $((SECONDS - start)) "$*" >&2; }
die() { printf '[build-kernel] error: %s\n' "$*" >&2; exit 1; }

[ -x "$venv_bin/vng" ] || die "virtme-ng is not installed in $venv_bin (run: make venv)"
export PATH=$venv_bin:$PATH

tree=$("$here/kernel-source.sh")
kver=$(make -s -C "$tree" kernelversion 2>/dev/null)
vngver=$(vng --version 2>/dev/null | tr -d '\n' || echo unknown)
# What the source is: the Debian package the tree was unpacked from, or a
# developer's tree (its path and git commit; uncommitted edits are rebuilt
# by make in place but do not change the key).
case "$tree" in
    "$cache"/src/*) source_id=debian:$(basename "$(dirname "$tree")") ;;
    *) source_id=tree:$tree@$(git -C "$tree" rev-parse HEAD 2>/dev/null || echo no-git) ;;
esac
key=$( { echo "$kver"; echo "$source_id"; sha256sum < "$here/0001-bpf-allow-dynptr-from-uptr.patch";
         sha256sum < "$here/kernel.config"; echo "$vngver"; gcc --version | head -n1; pahole --version; } |
       sha256sum | cut -c1-16)
out=$cache/kernels/$kver-$key
if [ -f "$out/bzImage" ]; then
    log "cached: $out/bzImage"
    echo "$out/bzImage"
    exit 0
fi
mkdir -p "$out"
buildlog=$out/build.log
: > "$buildlog"
log "kernel $kver, tree $tree, log $buildlog"

log "configuring (vng --kconfig + vm/kernel.config)"
(cd "$tree" && vng --kconfig --config "$here/kernel.config") >> "$buildlog" 2>&1 ||
    die "configuration failed, see $buildlog"
# vng applies its own fragments after ours for some options; re-assert ours.
(cd "$tree" && scripts/kconfig/merge_config.sh -m .config "$here/kernel.config" && make olddefconfig) >> "$buildlog" 2>&1 ||
    die "merging vm/kernel.config failed, see $buildlog"
for opt in BPF_SYSCALL DEBUG_INFO_BTF FTRACE_SYSCALLS BPF_EVENTS; do
    grep -q "^CONFIG_$opt=y" "$tree/.config" || die "CONFIG_$opt did not survive olddefconfig (missing dependency?)"
done

log "building bzImage with $jobs jobs"
(cd "$tree" && make -j"$jobs" bzImage) >> "$buildlog" 2>&1 &
pid=$!
while kill -0 "$pid" 2>/dev/null; do
    sleep 30
    kill -0 "$pid" 2>/dev/null || break
    step=$(grep -E '^\s+(CC|LD|AR|BTF|AS|GEN|OBJCOPY|BTFIDS)\s' "$buildlog" | tail -n1 | sed 's/^ *//')
    log "building: $(grep -cE '^\s+CC\s' "$buildlog") files compiled, now: ${step:-...}"
done
wait "$pid" || { tail -n 30 "$buildlog" >&2; die "kernel build failed, see $buildlog"; }
cp "$tree/arch/x86/boot/bzImage" "$out/bzImage.tmp"
cp "$tree/.config" "$out/config"
mv "$out/bzImage.tmp" "$out/bzImage"
log "built $out/bzImage"
echo "$out/bzImage"
