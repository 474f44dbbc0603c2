"""Does this kernel and process support a uptr KV store?  Probe it for real.

:func:`check_kernel` loads ``probe_uptr.bpf.o``, creates a store for the
calling thread, writes a value and runs the probe program, which must read
it back through the uptr page.  Anything missing becomes an
:class:`UnsupportedKernelError` that says what to do.

When the probe does not load, whether the kernel has uptr at all is read from
its BTF (:func:`kernel_has_uptr`), not guessed from the verifier's words: a
kernel without uptr takes the ``__uptr`` pointer for a plain one and rejects
its use with the same "invalid mem access 'scalar'" as many unrelated bugs.
"""

from __future__ import annotations

import errno
import functools
import os
import platform

from ._libbpf import LibbpfError
from .btf import raw_btf
from .errors import UnsupportedKernelError
from .loader import BpfObject, LoadError
from .objects import COPY_PATH_ENV, COPY_PATHS, object_path
from .store import KVStore

CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39
VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
PROBE = "probe_uptr"
PROBE_VALUE = 0x7570_7472_6B76_0001
# The kinds of special field a map value may hold (spin lock, timer, kptr, ...);
# Linux 6.13 added BPF_UPTR with uptr, and every kernel that has uptr says so here.
FIELD_TYPE_ENUM, UPTR_FIELD_TYPE = "btf_field_type", "BPF_UPTR"


def _effective_caps() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def _check_privileges() -> None:
    # Capabilities, not the uid: root without them (a container, an empty
    # bounding set) cannot use BPF either.
    caps = _effective_caps()
    if not (caps >> CAP_SYS_ADMIN & 1 or (caps >> CAP_BPF & 1 and caps >> CAP_PERFMON & 1)):
        raise UnsupportedKernelError(
            "this process may not use BPF: it needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); "
            "run as root with its capabilities")


def kernel_has_uptr(vmlinux_btf: str | None = None) -> bool:
    """True when the kernel knows uptr fields: the BTF it describes itself with
    (VMLINUX_BTF) has BPF_UPTR in enum btf_field_type.  False before Linux 6.13."""
    kinds = raw_btf(vmlinux_btf or VMLINUX_BTF).enum(FIELD_TYPE_ENUM) or {}
    return UPTR_FIELD_TYPE in kinds


@functools.cache
def check_kernel() -> str:
    """Raise UnsupportedKernelError unless a store works here; return a summary."""
    release = platform.release()
    _check_privileges()
    if not os.path.exists(VMLINUX_BTF):
        raise UnsupportedKernelError(
            f"{VMLINUX_BTF} is missing: the kernel ({release}) needs CONFIG_DEBUG_INFO_BTF=y")
    try:
        with BpfObject(object_path(PROBE)) as obj:
            try:
                obj.load()
            except LoadError as exc:
                if not kernel_has_uptr():
                    raise UnsupportedKernelError(
                        f"kernel {release} has no uptr support in task storage ({VMLINUX_BTF} "
                        f"has no {UPTR_FIELD_TYPE} field type): a store needs Linux >= 6.13, or this "
                        "repository's patched-kernel VM (make vmdemo, make vmtest-all)"
                    ) from exc
                if exc.errno == errno.EPERM:
                    raise UnsupportedKernelError(
                        f"loading BPF programs is not permitted here ({exc.strerror}); "
                        "check kernel.unprivileged_bpf_disabled, lockdown and capabilities") from exc
                raise
            with KVStore.create(obj) as store:
                store.put(0, PROBE_VALUE.to_bytes(8, "little"))
                obj.program("probe_get").test_run()
                got = obj.globals.get_int("value", signed=False)
                if obj.globals.get_int("ret") != 8 or got != PROBE_VALUE:
                    raise UnsupportedKernelError(
                        f"kernel {release}: a BPF program could not read a value through a uptr page "
                        f"(returned {obj.globals.get_int('ret')}, read {got:#x})")
    except LibbpfError as exc:
        if exc.errno == errno.EPERM:
            raise UnsupportedKernelError(
                f"BPF is not permitted here ({exc}); run as root or with CAP_BPF and CAP_PERFMON") from exc
        raise
    return f"uptr KV store supported on Linux {release}"


@functools.cache
def dynptr_over_uptr_supported() -> bool:
    """True when the verifier accepts bpf_dynptr_from_mem() on uptr memory (patched kernels)."""
    with BpfObject(object_path(PROBE, "dynptr")) as obj:
        try:
            obj.load()
        except LoadError as exc:
            if "bpf_dynptr_from_mem" in exc.verifier_log:
                return False
            raise
    return True


def choose_copy_path(requested: str | None = None) -> str:
    """Resolve "auto" (the default, or $UPTRKV_COPY_PATH) to the path this kernel runs."""
    choice = requested or os.environ.get(COPY_PATH_ENV) or "auto"
    if choice == "auto":
        return "dynptr" if dynptr_over_uptr_supported() else "stock"
    if choice not in COPY_PATHS:
        raise ValueError(f"copy path {choice!r} is not auto, stock or dynptr")
    return choice
