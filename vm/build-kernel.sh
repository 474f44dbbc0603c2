#!/usr/bin/env bash
# Build (or reuse) a bzImage with the uptr dynptr patch; print its path.
#
# The image is cached under $UPTRKV_CACHE/kernels/<version>-<key>/ where the
# key hashes the kernel source, the patch, the config fragments and the
# toolchain, so a second run reuses it and a changed patch or fragment
# rebuilds. Each key builds out of tree in its own obj/ directory (make O=),
# so variants (KERNEL_DEBUG=1) never reconfigure each other's objects, and a
# lock per key makes a second build of the same key wait for the first
# instead of sharing its objects mid-build and truncating its log.
#
#   KERNEL_DEBUG=1   the debug variant: vm/kernel-debug.config on top
#                    (KASAN, lockdep, PROVE_RCU), under its own key
#
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

[ -x "$venv_bin/vng" ] || die "virtme-ng is not installed in $venv_bin (run: ./run kernel)"
export PATH=$venv_bin:$PATH

fragments=("$here/kernel.config")
variant=
if [ "${KERNEL_DEBUG:-0}" = 1 ]; then
    fragments+=("$here/kernel-debug.config")
    variant=debug-
fi

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
key=$( { echo "$kver"; echo "$source_id"; cat "$here"/patches/*.patch | sha256sum;
         for f in "${fragments[@]}"; do sha256sum < "$f"; done
         echo "$vngver"; gcc --version | head -n1; pahole --version; } |
       sha256sum | cut -c1-16)
out=$cache/kernels/$kver-$variant$key
mkdir -p "$out"
exec 9> "$out/.lock"
if ! flock -n 9; then
    log "another build of this kernel holds $out/.lock: waiting for it"
    flock 9
fi
if [ -f "$out/bzImage" ]; then
    log "cached: $out/bzImage"
    echo "$out/bzImage"
    exit 0
fi
obj=$out/obj
buildlog=$out/build.log
: > "$buildlog"
log "kernel $kver ${variant:+(${variant%-}) }from $tree, objects in $obj, log $buildlog"

log "configuring (vng --kconfig + ${fragments[*]##*/})"
mkdir -p "$obj"
cfg_args=()
for f in "${fragments[@]}"; do cfg_args+=(--config "$f"); done
(cd "$tree" && vng --kconfig "${cfg_args[@]}" O="$obj") >> "$buildlog" 2>&1 ||
    die "configuration failed, see $buildlog"
# vng applies its own fragments after ours for some options; re-assert ours.
(cd "$tree" && scripts/kconfig/merge_config.sh -m -O "$obj" "$obj/.config" "${fragments[@]}" &&
    make O="$obj" olddefconfig) >> "$buildlog" 2>&1 ||
    die "merging ${fragments[*]##*/} failed, see $buildlog"
required=(BPF_SYSCALL DEBUG_INFO_BTF FTRACE_SYSCALLS BPF_EVENTS)
[ -z "$variant" ] || required+=(KASAN PROVE_LOCKING PROVE_RCU)
for opt in "${required[@]}"; do
    grep -q "^CONFIG_$opt=y" "$obj/.config" || die "CONFIG_$opt did not survive olddefconfig (missing dependency?)"
done

log "building bzImage with $jobs jobs"
(cd "$tree" && make O="$obj" -j"$jobs" bzImage) >> "$buildlog" 2>&1 &
pid=$!
while kill -0 "$pid" 2>/dev/null; do
    sleep 30
    kill -0 "$pid" 2>/dev/null || break
    step=$(grep -E '^\s+(CC|LD|AR|BTF|AS|GEN|OBJCOPY|BTFIDS)\s' "$buildlog" | tail -n1 | sed 's/^ *//')
    log "building: $(grep -cE '^\s+CC\s' "$buildlog") files compiled, now: ${step:-...}"
done
wait "$pid" || { tail -n 30 "$buildlog" >&2; die "kernel build failed, see $buildlog"; }
cp "$obj/arch/x86/boot/bzImage" "$out/bzImage.tmp"
cp "$obj/.config" "$out/config"
mv "$out/bzImage.tmp" "$out/bzImage"
# Kept beside the image: the cold build time of this variant, for the README.
echo "$((SECONDS - start))" > "$out/build-seconds"
log "built $out/bzImage in $((SECONDS - start)) s"
echo "$out/bzImage"
