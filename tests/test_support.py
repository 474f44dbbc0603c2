"""check_kernel's decision "this kernel has no uptr": taken from the kernel's BTF
(BPF_UPTR in enum btf_field_type), never from the words of a verifier log.

The BTF files are written by libbpf's own BTF writer (btf__new_empty, btf__add_enum,
...), so the product's reader is the one that reads them, and no kernel is needed.
"""

from __future__ import annotations

import ctypes
import errno

import pytest

from uptrkv import support
from uptrkv._libbpf import lib
from uptrkv.errors import UnsupportedKernelError
from uptrkv.loader import LoadError

# enum btf_field_type as each kernel's BTF has it (include/linux/bpf.h).
FIELDS_6_12 = {"BPF_SPIN_LOCK": 1, "BPF_TIMER": 2, "BPF_KPTR_UNREF": 4, "BPF_KPTR_REF": 8,
               "BPF_KPTR_PERCPU": 16, "BPF_LIST_HEAD": 32, "BPF_LIST_NODE": 64, "BPF_RB_ROOT": 128,
               "BPF_RB_NODE": 256, "BPF_REFCOUNT": 512, "BPF_WORKQUEUE": 1024}
FIELDS_6_13 = {**FIELDS_6_12, "BPF_UPTR": 2048}
# Linux 6.1 had its own, file-local one (kernel/bpf/btf.c), under other names.
FIELDS_6_1 = {"BTF_FIELD_SPIN_LOCK": 0, "BTF_FIELD_TIMER": 1, "BTF_FIELD_KPTR": 2}

# What an old kernel says about the probe: the __uptr pointer is a plain u64 to it.
OLD_KERNEL_LOG = "; return *(__u64 *)kv->data;\n12: (79) r1 = *(u64 *)(r1 +8)\nR1 invalid mem access 'scalar'\n"


def write_btf(path, enums: dict[str, dict[str, int]]) -> str:
    """A raw BTF file (the format of /sys/kernel/btf/vmlinux) with an int and these enums."""
    new_empty, add_int, add_enum, add_value, raw_data, free = (
        lib.btf__new_empty, lib.btf__add_int, lib.btf__add_enum, lib.btf__add_enum_value,
        lib.btf__raw_data, lib.btf__free)
    new_empty.restype, new_empty.argtypes = ctypes.c_void_p, []
    add_int.restype, add_int.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
    add_enum.restype, add_enum.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32]
    add_value.restype, add_value.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int64]
    raw_data.restype = ctypes.c_void_p
    raw_data.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]
    btf = new_empty()
    assert btf
    try:
        assert add_int(btf, b"int", 4, 1) > 0
        for name, values in enums.items():
            assert add_enum(btf, name.encode(), 4) > 0
            for value_name, value in values.items():
                assert add_value(btf, value_name.encode(), value) == 0
        size = ctypes.c_uint32()
        data = raw_data(btf, ctypes.byref(size))
        assert data
        path.write_bytes(ctypes.string_at(data, size.value))
    finally:
        free(btf)
    return str(path)


@pytest.mark.nokernel
@pytest.mark.parametrize("enums, has_uptr", [
    ({"btf_field_type": FIELDS_6_13}, True),
    ({"btf_field_type": FIELDS_6_12}, False),
    ({"btf_field_type": FIELDS_6_1}, False),
    ({"bpf_map_type": {"BPF_MAP_TYPE_TASK_STORAGE": 29}}, False),   # no such enum at all
    ({"other": {"BPF_UPTR": 1}, "btf_field_type": FIELDS_6_12}, False),  # the name alone is not enough
], ids=["6.13", "6.12", "6.1", "no-enum", "elsewhere"])
def test_kernel_has_uptr_reads_btf_field_type(tmp_path, enums, has_uptr):
    assert support.kernel_has_uptr(write_btf(tmp_path / "vmlinux", enums)) is has_uptr


class _FailingProbe:
    """A BpfObject whose load() fails as the verifier rejects the probe."""

    def __init__(self, path, err=errno.EACCES, log=OLD_KERNEL_LOG):
        self.path, self.err, self.log = str(path), err, log

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def load(self):
        raise LoadError(self.err, self.path, self.log, "")


@pytest.fixture
def probe_fails(monkeypatch, tmp_path):
    """check_kernel (uncached) on a kernel whose BTF is FIELDS and whose verifier rejects the probe."""
    monkeypatch.setattr(support, "_check_privileges", lambda: None)
    monkeypatch.setattr(support, "object_path", lambda name, *a: tmp_path / f"{name}.bpf.o")
    monkeypatch.setattr(support.platform, "release", lambda: "6.1.0-test")

    def check(fields, err=errno.EACCES, log=OLD_KERNEL_LOG):
        monkeypatch.setattr(support, "VMLINUX_BTF", write_btf(tmp_path / "vmlinux", {"btf_field_type": fields}))
        monkeypatch.setattr(support, "BpfObject", lambda path: _FailingProbe(path, err, log))
        return support.check_kernel.__wrapped__()
    return check


@pytest.mark.nokernel
@pytest.mark.parametrize("fields", [FIELDS_6_12, FIELDS_6_1], ids=["6.12", "6.1"])
def test_a_kernel_without_uptr_is_unsupported_and_says_what_to_do(probe_fails, fields):
    with pytest.raises(UnsupportedKernelError) as info:
        probe_fails(fields)
    msg = str(info.value)
    assert msg.startswith("kernel 6.1.0-test has no uptr support in task storage"), msg
    assert "has no BPF_UPTR field type" in msg and "Linux >= 6.13" in msg and "make vmtest-all" in msg


@pytest.mark.nokernel
@pytest.mark.parametrize("log", [OLD_KERNEL_LOG, "R2 type=scalar expected=fp\n", "uptr: bad access\n"],
                         ids=["invalid-mem-access-scalar", "type-scalar", "uptr"])
def test_a_probe_failure_on_a_kernel_with_uptr_is_the_error_itself(probe_fails, log):
    """'scalar' or 'uptr' in the log of a kernel that has uptr is a bug to see, not a skip."""
    with pytest.raises(LoadError) as info:
        probe_fails(FIELDS_6_13, log=log)
    assert info.value.verifier_log == log


@pytest.mark.nokernel
def test_eperm_on_a_kernel_with_uptr_is_still_unsupported(probe_fails):
    with pytest.raises(UnsupportedKernelError, match="loading BPF programs is not permitted"):
        probe_fails(FIELDS_6_13, err=errno.EPERM, log="")


def test_a_kernel_that_hosts_a_store_has_uptr_in_its_btf(kernel):
    """The fact check_kernel relies on holds where a store works (the host, the VM)."""
    assert support.kernel_has_uptr()
