"""Loader objects against the kernel: globals, pins, map reuse, links, verifier logs."""

import errno
import os

import pytest

from uptrkv._libbpf import LibbpfError
from uptrkv.loader import BpfObject, LoadError
from uptrkv.objects import object_path
from uptrkv.store import KVStore

EXPECT_DYNPTR = os.environ.get("UPTRKV_EXPECT_DYNPTR") == "1"


def test_globals_before_and_after_load(kernel):
    with BpfObject(object_path("demo_sys_enter")) as obj:
        obj.globals.set_int("target_tgid", 4242)
        assert obj.globals.get_int("target_tgid") == 4242
        obj.load()
        assert obj.globals.get_int("target_tgid") == 4242     # read back from the frozen map
        with pytest.raises(PermissionError, match="read-only"):
            obj.globals.set_int("target_tgid", 1)
        with pytest.raises(KeyError, match="no global variable"):
            obj.globals.read("nope")


def test_missing_object_and_names(kernel, tmp_path):
    with pytest.raises(FileNotFoundError, match="make bpf"):
        BpfObject(tmp_path / "absent.bpf.o")
    with BpfObject(object_path("test_kv_ops")) as obj:
        with pytest.raises(KeyError, match="no map"):
            obj.map("nope")
        with pytest.raises(KeyError, match="no program"):
            obj.program("nope")
        with pytest.raises(ValueError, match="not loaded"):
            obj.program("kv_ops").attach()
    with pytest.raises(ValueError, match="closed"):
        obj.map("kv_store_map")


def test_pinned_map_reused_by_second_object(kernel, bpffs):
    pin = os.path.join(bpffs, "kv")
    with BpfObject(object_path("test_kv_ops")).load() as first, \
            KVStore.create(first, pin_path=pin) as store:
        store.put(3, b"shared!!")
        assert os.path.exists(pin)
        with BpfObject(object_path("test_kv_ops")) as second:
            second.map("kv_store_map").reuse_pinned(pin)
            second.load()
            g = second.globals
            g.set_int("op", 1)
            g.set_int("key", 3)
            g.set_int("size", 8)
            second.program("kv_ops").test_run()
            assert g.get_int("ret") == 8 and g.read("buf")[:8] == b"shared!!"
    assert not os.path.exists(pin)              # close unpins what it pinned


def test_reuse_of_missing_pin_raises_errno(kernel, bpffs):
    with BpfObject(object_path("test_kv_ops")) as obj:
        with pytest.raises(LibbpfError) as info:
            obj.map("kv_store_map").reuse_pinned(os.path.join(bpffs, "missing"))
        assert info.value.errno == errno.ENOENT


def test_link_close_detaches(kernel):
    with BpfObject(object_path("demo_sys_enter")) as obj:
        obj.globals.set_int("target_tgid", os.getpid())
        obj.load()
        with KVStore.create(obj) as store:
            store.put(1, bytes(8))
            link = obj.program("demo_sys_enter").attach()
            os.getppid()
            link.close()
            seen = store.get(1)
            assert int.from_bytes(seen, "little") >= 1
            for _ in range(10):
                os.getppid()
            assert store.get(1) == seen


def test_verifier_rejection_carries_the_log(kernel):
    obj = BpfObject(object_path("probe_uptr", "dynptr"))
    try:
        if EXPECT_DYNPTR:
            obj.load()
        else:
            with pytest.raises(LoadError) as info:
                obj.load()
            assert info.value.errno == errno.EACCES
            assert "Unsupported reg type mem for bpf_dynptr_from_mem data" in str(info.value)
            assert "processed" in info.value.verifier_log
    finally:
        obj.close()


def test_dynptr_support_matches_the_kernel(kernel):
    from uptrkv.support import choose_copy_path, dynptr_over_uptr_supported
    assert dynptr_over_uptr_supported() is EXPECT_DYNPTR
    assert choose_copy_path() == ("dynptr" if EXPECT_DYNPTR else "stock")
    assert choose_copy_path("stock") == "stock"
    with pytest.raises(ValueError, match="not auto, stock or dynptr"):
        choose_copy_path("fast")


def test_not_an_object_raises_errno(kernel, tmp_path):
    junk = tmp_path / "junk.bpf.o"
    junk.write_bytes(b"not an ELF file")
    with pytest.raises(LibbpfError) as info:
        BpfObject(junk)
    assert info.value.errno > 0 and "bpf_object__open_file" in str(info.value)


def test_failed_pin_leaves_no_store_behind(kernel, bpffs):
    with BpfObject(object_path("test_kv_ops")).load() as obj:
        with pytest.raises(LibbpfError):
            KVStore.create(obj, pin_path=os.path.join(bpffs, "no", "such", "dir"))
        with KVStore.create(obj) as store:        # the failed attempt left no element
            store.put(1, b"ok")
            assert store.get(1) == b"ok"


def test_verifier_stats_of_one_program(kernel):
    """The verifier's own count for a program loaded alone; none without asking before load."""
    with BpfObject(object_path("bench_get")) as obj:
        for p in obj.programs():
            p.set_autoload(p.name in ("get_base", "get_kv"))
        obj.program("get_kv").record_verifier_stats()
        obj.load()
        stats = obj.program("get_kv").verifier_stats
        assert stats.insns_limit == 1_000_000
        assert 0 < stats.insns_processed < stats.insns_limit
        assert stats.total_states > 0 and stats.peak_states > 0
        with pytest.raises(ValueError, match="record_verifier_stats"):
            obj.program("get_base").verifier_stats
        with pytest.raises(ValueError, match="already loaded"):
            obj.program("get_base").record_verifier_stats()


def test_rejection_while_recording_stats_says_so(kernel):
    with BpfObject(object_path("rollout_v2_rejected")) as obj:
        obj.program("rollout_v2").record_verifier_stats()
        with pytest.raises(LoadError) as err:
            obj.load()
    assert err.value.errno == errno.EACCES
    log = err.value.verifier_log
    assert log.startswith("rollout_v2: ") and "processed " in log, log
    assert "invalid mem access" in log or "mem_or_null" in log, log       # the reason, too
    assert "not its whole log" in str(err.value)
