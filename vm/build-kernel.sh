#!/usr/bin/env bash
# Build (or reuse) a bzImage with the uptr dynptr patch; print its path.
#
# The image is cached under $UPTRKV_CACHE/kernels/<source>-[debug-]<key>/
# where the key hashes the kernel source, the patch series, the config
# fragments and the toolchain, so a second run reuses it and a changed patch
# or fragment rebuilds. Objects live in one directory per source and variant
# ($UPTRKV_CACHE/obj/, make O=), so a changed patch rebuilds incrementally and
# the debug variant never reconfigures the default one's objects.
#
# One build at a time: the whole build (series switch, configure, make,
# copy) runs under $UPTRKV_CACHE/build.lock. A second build (two CI runs,
# `make vmtest` started twice) waits for it, then finds its image cached or
# builds on a tree nobody else is changing; logs are never shared.
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
clang=${CLANG:-clang-19}
# Both go into the cache key (they build the selftest objects beside the image).
for tool in "$clang" bpftool; do
    command -v "$tool" > /dev/null || die "$tool is not installed (run: ./run kernel, as root)"
done

fragments=("$here/kernel.config")
variant=
if [ "${KERNEL_DEBUG:-0}" = 1 ]; then
    fragments+=("$here/kernel-debug.config")
    variant=debug-
fi

# The key needs only what the source is, not the unpacked tree: a cached
# image is found without waiting for another build.
source_id=$("$here/kernel-source.sh" --id)
vngver=$(vng --version 2>/dev/null | tr -d '\n' || echo unknown)
# (This script and the selftest stand-ins are in it for the selftest
# objects built beside the image, and so are clang and bpftool. First lines
# by sed, which reads to the end: head would exit early, the tool could get
# SIGPIPE, and under pipefail the script would end with 141 now and then.)
key=$( { echo "$source_id"; cat "$here"/patches/*.patch | sha256sum;
         for f in "${fragments[@]}" "$0" "$here"/selftests-include/*; do sha256sum < "$f"; done
         echo "$vngver"; gcc --version | sed -n 1p; pahole --version;
         "$clang" --version | sed -n 1p; bpftool --version | sed -n 1p; } |
       sha256sum | cut -c1-16)
name=${source_id#debian:}
case "$source_id" in tree:*) name=$(basename "${source_id%@*}") ;; esac
out=$cache/kernels/$name-$variant$key
if [ -f "$out/bzImage" ]; then
    log "cached: $out/bzImage"
    echo "$out/bzImage"
    exit 0
fi

mkdir -p "$cache/obj"
exec 9> "$cache/build.lock"
if ! flock -n 9; then
    log "another kernel build holds $cache/build.lock: waiting for it"
    flock 9
fi
if [ -f "$out/bzImage" ]; then           # built by the one we waited for
    log "cached: $out/bzImage"
    echo "$out/bzImage"
    exit 0
fi
mkdir -p "$out"
tree=$("$here/kernel-source.sh")
kver=$(make -s -C "$tree" kernelversion 2>/dev/null)
# Objects per source and variant, not per patch: a new series is an
# incremental build. (A developer's tree: uncommitted edits are rebuilt by
# make but do not change the key.)
obj_id=$(printf '%s' "${source_id%@*}" | sha256sum | cut -c1-12)
obj=$(readlink -m "$cache/obj/$kver-${variant}src-$obj_id")
buildlog=$out/build.log
: > "$buildlog"
log "kernel $kver ${variant:+(${variant%-}) }from $tree, objects in $obj, log $buildlog"
build_start=$SECONDS

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
# Progress every 30 s, checked every second: a 30 s sleep would add up to
# 30 s to build-seconds and, left behind by a killed build, hold the lock.
last=$SECONDS
while kill -0 "$pid" 2>/dev/null; do
    sleep 1 9>&-
    [ $((SECONDS - last)) -ge 30 ] || continue
    last=$SECONDS
    kill -0 "$pid" 2>/dev/null || break
    # (|| true: a log with no such line yet must not end the script under pipefail)
    step=$({ grep -E '^\s+(CC|LD|AR|BTF|AS|GEN|OBJCOPY|BTFIDS)\s' "$buildlog" || true; } | tail -n1 | sed 's/^ *//')
    log "building: $(grep -cE '^\s+CC\s' "$buildlog" || true) files compiled, now: ${step:-...}"
done
wait "$pid" || { tail -n 30 "$buildlog" >&2; die "kernel build failed, see $buildlog"; }

# The kernel-style verifier selftests of uptr memory, compiled as the tree's
# selftests build would (its headers and system include dirs, this kernel's
# BTF as vmlinux.h), so that the guest suite can load each program and check
# its __success / __failure __msg annotations (tests/test_vm_kernel_selftests.py)
# without the whole test_progs build, which needs pahole >= 1.26 for kfunc
# declarations in vmlinux.h (Debian 12 has 1.24): the series' own
# progs/verifier_uptr_dynptr.c; the tree's progs/uptr_failure.c, whose
# messages 0001 changes; and the tree's other programs that load uptr
# fields, task_ls_uptr.c and test_task_local_data.c, which must still load.
# uptr_failure.c includes bpf_experimental.h for two kfuncs;
# vm/selftests-include/ stands in for it (see the header).
sel=$tree/tools/testing/selftests/bpf
if [ -f "$sel/progs/verifier_uptr_dynptr.c" ]; then
    log "compiling the uptr verifier selftests against this kernel's BTF"
    rm -rf "$out/selftests" && mkdir -p "$out/selftests/include"
    # The selftests Makefile's CLANG_SYS_INCLUDES: the host's system headers, last.
    mapfile -t sys_inc < <("$clang" -v -E - < /dev/null 2>&1 |
        sed -n '/<...> search starts here:/,/End of search list./{ s| \(/.*\)|-idirafter\n\1|p }')
    cflags=(-g -O2 -Wall -Werror --target=bpfel -mcpu=v3 -D__TARGET_ARCH_x86
            -std=gnu11 -fno-strict-aliasing -fms-extensions -Wno-microsoft-anon-tag
            -Wno-compare-distinct-pointer-types -I"$out/selftests/include"
            -I"$here/selftests-include" -I"$tree/tools/lib" -I"$sel"
            -I"$tree/tools/include/uapi" -I"$tree/tools/include" "${sys_inc[@]}")
    compile_selftests() {
        bpftool btf dump file "$obj/vmlinux" format c > "$out/selftests/include/vmlinux.h" &&
        python3 "$tree/scripts/bpf_doc.py" --header --file "$tree/include/uapi/linux/bpf.h" \
            > "$out/selftests/include/bpf_helper_defs.h" || return
        for prog in verifier_uptr_dynptr uptr_failure task_ls_uptr test_task_local_data; do
            "$clang" "${cflags[@]}" -c "$sel/progs/$prog.c" -o "$out/selftests/$prog.bpf.o" || return
        done
    }
    compile_selftests >> "$buildlog" 2>&1 ||
        { tail -n 30 "$buildlog" >&2; die "compiling the verifier selftests failed, see $buildlog"; }
    rm -rf "$out/selftests/include"
fi
cp "$obj/arch/x86/boot/bzImage" "$out/bzImage.tmp"
cp "$obj/.config" "$out/config"
mv "$out/bzImage.tmp" "$out/bzImage"
# Kept beside the image: how long this build took (configure + make), cold
# or incremental, for the README's numbers.
echo "$((SECONDS - build_start))" > "$out/build-seconds"
log "built $out/bzImage: make took $((SECONDS - build_start)) s"
echo "$out/bzImage"
