"""What bpf_dynptr_from_mem() accepts on the running kernel, case by case.

Each program of ``bpf/verifier_dynptr_uptr.bpf.c`` is loaded alone and its
verdict and verifier message are checked.  On the patched kernel
(``UPTRKV_EXPECT_DYNPTR=1``, the VM) only the uptr register is accepted; on
a stock kernel every case is refused, the uptr one included.
"""

from __future__ import annotations

import errno

import pytest

from conftest import EXPECT_DYNPTR
from uptrkv.loader import BpfObject, LoadError
from uptrkv.objects import object_path
from uptrkv.store import KVStore

OBJECT = "verifier_dynptr_uptr"
PATCHED = EXPECT_DYNPTR


def unsupported(reg_type: str) -> str:
    return f"Unsupported reg type {reg_type} for bpf_dynptr_from_mem data"


# program: (message on the patched kernel, message on a stock kernel,
#           what the patched verifier must have passed before refusing)
REFUSED = {
    "uptr_no_null_check": ("R1 type=uptr_mem_or_null expected=", "R1 type=mem_or_null expected=", None),
    "uptr_dynptr_slice": (unsupported("mem"), unsupported("mem"), "call bpf_dynptr_data#"),
    "ringbuf_slice_chain": (unsupported("mem"), unsupported("mem"), "call bpf_dynptr_data#"),
    "ringbuf_record": (unsupported("ringbuf_mem"), unsupported("ringbuf_mem"), "call bpf_ringbuf_reserve#"),
    "global_subprog_arg": (unsupported("mem"), unsupported("mem"), "Validating dynptr_from_arg() func#"),
    "rdonly_slice": ("R1 type=rdonly_mem expected=", "R1 type=rdonly_mem expected=", "call bpf_dynptr_slice#"),
    "rdonly_map_value": ("write into map forbidden, value_size=64 off=0 size=64",
                         "write into map forbidden, value_size=64 off=0 size=64", None),
}
ACCEPTED = "uptr_read_write"


def open_one(name: str) -> BpfObject:
    obj = BpfObject(object_path(OBJECT))
    for prog in obj.programs():
        prog.set_autoload(prog.name == name)
    return obj


def test_every_program_has_a_case():
    with BpfObject(object_path(OBJECT)) as obj:
        assert {p.name for p in obj.programs()} == set(REFUSED) | {ACCEPTED}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused(kernel, name):
    patched_msg, stock_msg, reached = REFUSED[name]
    msg = patched_msg if PATCHED else stock_msg
    with open_one(name) as obj:
        with pytest.raises(LoadError) as exc:
            obj.load()
    log = exc.value.verifier_log
    assert exc.value.errno == errno.EACCES, log
    assert msg in log, log
    if PATCHED and reached:
        # Refused at the case's own call, not at an earlier one.
        assert 0 <= log.find(reached) < log.rfind(msg), log


def test_uptr_read_write(kernel):
    with open_one(ACCEPTED) as obj:
        if not PATCHED:
            with pytest.raises(LoadError) as exc:
                obj.load()
            assert unsupported("mem") in exc.value.verifier_log
            return
        obj.load()
        g = obj.globals
        prog = obj.program(ACCEPTED)
        with KVStore.create(obj) as store:
            store.put(1, (0x1122334455667788).to_bytes(8, "little"))
            store.put(2, bytes(8))
            src, dst = store.slot(1), store.slot(2)
            assert src.page == dst.page == 0
            g.set_int("read_off", src.offset)
            g.set_int("write_off", dst.offset)
            assert prog.test_run() == 0
            assert (g.get_int("read_ret"), g.get_int("write_ret")) == (0, 0)
            assert store.get(2) == (0x1122334455667789).to_bytes(8, "little")
            assert store.get(1) == (0x1122334455667788).to_bytes(8, "little")

            # The dynptr spans the page and no further: bounds hold at run time.
            g.set_int("read_off", 4096 - 4)
            g.set_int("write_off", 4096 - 4)
            assert prog.test_run() == 0
            assert g.get_int("read_ret") == -errno.E2BIG
            assert g.get_int("write_ret") == -errno.E2BIG
            assert store.get(2) == (0x1122334455667789).to_bytes(8, "little")
