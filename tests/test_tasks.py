"""Stores for other tasks and threads, and the demo on a real hook."""

import errno
import io
import struct
import threading

import pytest

from conftest import NEG, Target, wait_for
from uptrkv.loader import BpfObject
from uptrkv.objects import object_path
from uptrkv.store import KVStore

def test_ops_process_owns_store_of_another_process(kernel, copy_path):
    child = Target()
    try:
        with BpfObject(object_path("demo_sys_enter", copy_path)) as obj:
            obj.globals.set_int("target_tgid", child.pid)
            obj.load()
            with KVStore.create(obj, pid=child.pid) as store:
                assert store.task == f"process {child.pid}"
                store.put(1, bytes(8))
                store.put(2, bytes(8))
                store.put(3, struct.pack("<I", 110))       # getppid
                store.put(4, bytes(8))
                store.put(5, b"seeded by owner\0")
                store.put(6, bytes(16))
                with obj.program("demo_sys_enter").attach():
                    assert wait_for(lambda: struct.unpack("<Q", store.get(4))[0] >= 3)
                    assert store.get(6) == b"SEEDED BY OWNER\0"
                    store.put(5, b"live update\0\0\0\0\0")   # seen by the child's next syscall
                    assert wait_for(lambda: store.get(6) == b"LIVE UPDATE\0\0\0\0\0")
    finally:
        child.kill()


def test_store_of_a_thread(ops_obj, bpf):
    result = {}

    def worker():
        with KVStore.create(ops_obj) as store:
            result["task"] = store.task
            store.put(1, b"thread!!")
            result["in_thread"] = bpf.get(1)
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert result["task"].startswith("thread ")
    assert result["in_thread"] == (8, b"thread!!")
    assert bpf.get(1)[0] == NEG["ESRCH"]        # the main thread has no store


def test_demo_prints_what_bpf_read_and_wrote(kernel):
    from uptrkv import demo
    out = io.StringIO()
    after = demo.run(calls=17, out=out)
    assert after["watch_hits"] == 17
    assert after["syscalls"] >= 17
    assert after["shout"] == "HELLO, UPTR KV"
    assert after["greeting"] == "hello, uptr kv"
    text = out.getvalue()
    assert "HELLO, UPTR KV" in text and "watch_hits" in text


def test_task_selection_errors(ops_obj):
    with pytest.raises(ValueError, match="pid or tid, not both"):
        KVStore.create(ops_obj, pid=1, tid=1)
    with pytest.raises(OSError) as info:
        KVStore.create(ops_obj, pid=2 ** 22 + 12345)       # above pid_max: no such process
    assert info.value.errno in (errno.ESRCH, errno.EINVAL)
    assert "cannot open a pidfd for process" in str(info.value)
