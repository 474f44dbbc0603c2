"""Named stores across processes: create in one, adopt in another, BPF in a third.

The target runs (never stopped) on another CPU with demo_sys_enter attached:
BPF counts its syscalls in key 1 and upper-cases key 5 into key 6, so a
value one process writes is seen by BPF in the target and read back by a
third process.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
import time

import pytest

from conftest import Forked, Target, run_python, wait_for
from uptrkv.errors import (StoreAccessError, StoreBusyError, StoreStateError, TargetGoneError)
from uptrkv.loader import BpfObject
from uptrkv.named_store import NamedStore
from uptrkv.objects import object_path

GREETING = 5
SHOUT = 6

CREATOR = """
import os, sys
from uptrkv.named_store import NamedStore
s = NamedStore.create(sys.argv[1], "demo", pid=int(sys.argv[2]))
s.put_many({1: bytes(8), 2: bytes(8), 3: (59).to_bytes(4, "little"), 4: bytes(8),
            5: b"hello, world!!!!", 6: bytes(16)})
print(s.path)
os._exit(0)          # dies without close(): nothing deletes the element
"""

WRITER = """
import sys
from uptrkv.named_store import NamedStore
s = NamedStore.open("demo")
s.put(5, sys.argv[1].encode().ljust(16, b"\\0"))
for k in range(100, 112):            # two more pages, then give them back
    s.put(k, bytes([k]) * 1000)
assert s.pages >= 3, s.pages
for k in range(100, 112):
    s.delete(k)
s.compact()
print(s.pages, s.repairs)
s.close()
"""


@pytest.fixture(scope="module")
def demo_module(kernel, copy_path):
    """demo_sys_enter attached for a running target on another CPU, loaded once a module
    (a load costs seconds in the TCG guest)."""
    cpus = sorted(os.sched_getaffinity(0))
    target = Target(cpu=cpus[-1] if len(cpus) > 1 else None)
    obj = BpfObject(object_path("demo_sys_enter", copy_path))
    obj.globals.set_int("target_tgid", target.pid)
    obj.load()
    link = obj.program("demo_sys_enter").attach()
    yield target, obj
    link.close()
    obj.close()
    target.kill()


@pytest.fixture
def demo(demo_module, named_roots):
    """The target and the path where its map is pinned for a creator to find."""
    target, obj = demo_module
    pin = os.path.join(named_roots[1], "demo_map")
    os.makedirs(named_roots[1], exist_ok=True)
    with obj.map("kv_store_map").handle() as h:     # an fd pin: libbpf's map pin remembers its path
        h.pin(pin)
    try:
        yield target, pin
    finally:
        # A store a failed test left: the target's element goes, so the next test can create one.
        fd = os.pidfd_open(target.pid)
        try:
            obj.map("kv_store_map").delete(struct.pack("i", fd))
        finally:
            os.close(fd)


def test_a_store_outlives_its_creator_and_another_process_changes_it(demo):
    target, pin = demo
    run_python(CREATOR, pin, str(target.pid), fresh=True)   # a new interpreter: shares nothing
    reader = NamedStore.open("demo", readonly=True)
    try:
        assert wait_for(lambda: reader.get_u64(1) > 10), "BPF in the target never counted"
        assert wait_for(lambda: reader.get(SHOUT) == b"HELLO, WORLD!!!!")
        out = run_python(WRITER, "greetings, bpf")
        assert out.stdout.split()[0] == "1"          # compacted back to one data page
        assert wait_for(lambda: reader.get(SHOUT) == b"GREETINGS, BPF\0\0")
        before = reader.get_u64(1)
        assert wait_for(lambda: reader.get_u64(1) > before), "BPF stopped counting after the changes"
    finally:
        reader.close()
    with NamedStore.open("demo") as s:
        assert s.verify() == []
        s.destroy()
    assert not os.path.exists(os.path.join(os.environ["UPTRKV_ROOT"], "demo"))


def test_one_writer_at_a_time_readers_take_no_lock(demo):
    target, pin = demo
    run_python(CREATOR, pin, str(target.pid))
    w = NamedStore.open("demo")
    try:
        with pytest.raises(StoreBusyError, match=f"open for writing by process {os.getpid()}"):
            NamedStore.open("demo")
        res = run_python("from uptrkv.named_store import NamedStore\nNamedStore.open('demo')", check=False)
        assert res.returncode == 1 and "StoreBusyError" in res.stderr
        r = NamedStore.open("demo", readonly=True)
        w.put(5, b"from the writer\0")
        assert r.get(5) == b"from the writer\0"
        with pytest.raises(StoreStateError, match="read-only"):
            r.put(5, b"x" * 16)
        r.close()
    finally:
        w.close()
    # the lock went with the writer's close: another process gets it now
    run_python("from uptrkv.named_store import NamedStore\nNamedStore.open('demo').destroy()")


def _hold_the_lock() -> None:
    store = NamedStore.open("demo")
    print("locked", flush=True)
    time.sleep(600)
    store.close()


def test_a_writer_killed_holding_the_lock_releases_it(demo):
    target, pin = demo
    run_python(CREATOR, pin, str(target.pid))
    with Forked(_hold_the_lock) as holder:
        assert holder.readline().strip() == "locked"
        with pytest.raises(StoreBusyError):
            NamedStore.open("demo")
        holder.kill()                                   # SIGKILL: no close(), no unlock
        holder.communicate()
    with NamedStore.open("demo") as s:
        assert s.get(5) == b"hello, world!!!!"
        s.destroy()


def test_an_element_deleted_behind_the_stores_back_is_registered_again(demo):
    """The element is gone (an owner's close() in the old model, a manual delete) while
    the target lives: open() adopts the files and BPF sees the same values again."""
    target, pin = demo
    run_python(CREATOR, pin, str(target.pid))
    with NamedStore.open("demo") as s:
        s.map.delete(s._key)
    with NamedStore.open("demo", readonly=True) as r:
        n = r.get_u64(1)
        assert not wait_for(lambda: r.get_u64(1) != n, timeout=0.5), "BPF counted without an element"
    with NamedStore.open("demo") as s:              # adopts: registers the pages again
        assert wait_for(lambda: s.get_u64(1) > n)
        s.destroy()


def test_a_target_that_exits_takes_its_element_and_open_says_so(demo):
    _, pin = demo
    target = Target()                                   # its own: this one exits
    run_python(CREATOR, pin, str(target.pid))
    target.kill()
    with pytest.raises(TargetGoneError, match="gc"):
        NamedStore.open("demo")


def test_a_reused_pid_is_told_apart_by_its_start_time(demo):
    target, pin = demo
    run_python(CREATOR, pin, str(target.pid))
    path = os.path.join(os.environ["UPTRKV_ROOT"], "demo", "state.json")
    state = json.load(open(path))
    state["target"]["start_time"] -= 1               # as if the pid now named a later task
    json.dump(state, open(path, "w"))
    with pytest.raises(TargetGoneError, match="another task"):
        NamedStore.open("demo")


@pytest.mark.parametrize("change", ["group-writable", "other-owner", "open-directory", "symlink"])
def test_open_refuses_files_others_could_change(demo, change):
    target, pin = demo
    run_python(CREATOR, pin, str(target.pid))
    d = os.path.join(os.environ["UPTRKV_ROOT"], "demo")
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert {stat.S_IMODE(os.stat(os.path.join(d, f)).st_mode) for f in os.listdir(d)} == {0o600}
    if change == "group-writable":
        os.chmod(os.path.join(d, "page0"), 0o620)
        match = "writable by group or others"
    elif change == "other-owner":
        os.chown(os.path.join(d, "meta"), 65534, 65534)
        match = "owned by uid 65534"
    elif change == "symlink":
        os.symlink("/etc/passwd", os.path.join(d, "evil"))
        match = "is a symbolic link"
    else:
        os.chmod(d, 0o755)
        match = "store directories are 0700"
    with pytest.raises(StoreAccessError, match=match):
        NamedStore.open("demo")
    with pytest.raises(StoreAccessError):
        NamedStore.open("demo", readonly=True)


def _nobody_tries(path: str, map_pin: str) -> None:
    """In a forked child: drop every inherited descriptor but stdout and stderr (the test
    process holds the map's fd), become uid/gid 65534 with no groups and no capabilities,
    then try to open the store, a page file and the map's pin; print what each raised."""
    from uptrkv._libbpf import lib
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    os.setgroups([])
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)
    attempts = [lambda: NamedStore.open("demo", readonly=True),
                lambda: NamedStore.open("demo"),
                lambda: open(os.path.join(path, "page0"), "r+b"),
                lambda: lib.bpf_obj_get(os.fsencode(map_pin))]
    out = []
    for attempt in attempts:
        try:
            attempt()
            out.append("opened")
        except Exception as exc:                       # noqa: BLE001 - reported to the parent
            out.append(f"{type(exc).__name__} {exc}")
    print(json.dumps(out))


def test_a_user_other_than_root_cannot_open_or_change_a_store(demo):
    """The runtime root is opened to all (0755), so what refuses is the store's own
    0700 directory and 0600 files, and the map pin's mode, not the test's private root."""
    target, pin = demo
    run_python(CREATOR, pin, str(target.pid))
    root = os.environ["UPTRKV_ROOT"]
    d = os.path.join(root, "demo")
    map_pin = json.loads(open(os.path.join(d, "state.json")).read())["map"]["pin"]
    os.chmod(root, 0o755)
    try:
        with Forked(_nobody_tries, d, map_pin) as p:
            out, err = p.communicate(timeout=60)
    finally:
        os.chmod(root, 0o700)
    assert p.returncode == 0, err
    got = json.loads(out)
    assert len(got) == 4, got
    assert got[0].startswith("StoreAccessError"), got[0]
    assert got[1].startswith("StoreAccessError"), got[1]
    assert got[2].startswith("PermissionError"), got[2]
    assert got[3].startswith("LibbpfError") and ("EACCES" in got[3] or "EPERM" in got[3]
                                                  or "ermission" in got[3]), got[3]
    with NamedStore.open("demo") as s:                 # and root's store is untouched
        assert s.get(5) == b"hello, world!!!!"
        assert s.verify() == []
        s.destroy()


def test_a_runtime_root_off_tmpfs_is_refused(named_roots, copy_path, tmp_path):
    with BpfObject(object_path("demo_sys_enter", copy_path)) as obj:
        obj.load()
        with pytest.raises(OSError, match="not on tmpfs"):
            NamedStore.create(obj, "demo", root=tmp_path / "root")


def test_a_store_on_a_map_that_bpftool_loaded_and_pinned(named_roots, copy_path, other_cpu):
    """No object file on our side: bpftool loads the program and pins it and its map;
    the store is created on the pinned map, its layout read from the map's BTF in the
    kernel.  Debian 12's bpftool (7.1) cannot attach tracing programs, so the pinned
    program is attached by its pin (a raw tracepoint link) and that link pinned too."""
    import shutil
    from uptrkv._libbpf import lib
    if shutil.which("bpftool") is None:
        pytest.fail("bpftool is missing: ./run installs it")
    pins = named_roots[1]
    os.makedirs(pins, exist_ok=True)
    prog_dir, map_dir = os.path.join(pins, "prog"), os.path.join(pins, "maps")
    subprocess.run(["bpftool", "prog", "loadall", str(object_path("ops_counter", copy_path)),
                    prog_dir, "pinmaps", map_dir], check=True, capture_output=True, text=True)
    prog_fd = lib.bpf_obj_get(os.path.join(prog_dir, "ops_counter").encode())
    try:
        link_fd = lib.bpf_raw_tracepoint_open(None, prog_fd)
        lib.bpf_obj_pin(link_fd, os.path.join(pins, "link").encode())
        os.close(link_fd)
    finally:
        os.close(prog_fd)
    target = Target(cpu=other_cpu)
    try:
        cli = ("import sys\nfrom uptrkv.cli import main\nsys.exit(main(sys.argv[1:]))",)
        res = run_python(*cli, "create", "--pid", str(target.pid), "--map",
                         os.path.join(map_dir, "kv_store_map"), "--name", "ops")
        assert "created store ops" in res.stdout, res.stdout
        run_python(*cli, "put", "ops", "1", "00" * 8)
        run_python(*cli, "put", "ops", "2", "ff" * 8)   # no syscall number: BPF overwrites it
        with NamedStore.open("ops", readonly=True) as r:
            assert wait_for(lambda: r.get_u64(1) > 10 and r.get_u64(2) < 1024), \
                f"the bpftool-loaded program never counted: {r.get_u64(1)} {r.get_u64(2):#x}"
        with NamedStore.open("ops") as s:
            s.destroy()
    finally:
        target.kill()


def test_a_fork_child_neither_writes_through_its_copy_nor_keeps_the_lock(demo):
    """The child's copy refuses checked calls; its inherited lock fd is closed at fork,
    so the parent's close() frees the store for the next writer while the child lives."""
    target, pin = demo
    run_python(CREATOR, pin, str(target.pid))
    s = NamedStore.open("demo")
    s.get(5)                                            # cached: the fast path knows its place
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                        # the child
        os.close(r)
        msgs = []
        for call in (lambda: s.put(5, b"child's value!!!"), lambda: s.put_u64(1, 7),
                     lambda: s.put(40, b"child")):
            try:
                call()
                msgs.append("worked")
            except Exception as exc:                    # noqa: BLE001 - reported to the parent
                msgs.append(type(exc).__name__)
        os.write(w, " ".join(msgs).encode())
        os.read(os.open("/dev/null", os.O_RDONLY), 1)
        import time
        time.sleep(30)
        os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 100) == b"StoreOwnerError StoreOwnerError StoreOwnerError"
        assert s.get(5) == b"hello, world!!!!"
        s.close()
        with NamedStore.open("demo") as again:          # the child still lives
            assert 40 not in again
            again.destroy()
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(r)


def test_a_write_that_ended_is_not_redone_over_a_later_bpf_write(named_roots, copy_path):
    """The writer dies after its in-place write ended (count even again) but before it
    cleared its write log.  BPF then writes the key; the next open() must keep that."""
    from conftest import POKED
    target = Target(code=POKED, stdin=subprocess.PIPE)
    obj = BpfObject(object_path("demo_sys_enter", copy_path))
    obj.globals.set_int("target_tgid", target.pid)
    obj.load()
    link = obj.program("demo_sys_enter").attach()
    try:
        s = NamedStore.create(obj, "demo", pid=target.pid)
        s.put_many({1: bytes(8), 2: bytes(8), 3: bytes(4), 4: bytes(8),
                    5: b"hello, world!!!!", 6: bytes(16)})
        s.close()
        assert wait_for(target.blocked_in_read), "the target never settled in read()"
        res = run_python("from uptrkv.named_store import NamedStore\n"
                         "NamedStore.open('demo').put(6, b'python put value')\n",
                         env={"UPTRKV_KILL_AT": "write.even"}, check=False)
        assert res.returncode == -9, res.stderr
        with NamedStore.open("demo", readonly=True) as r:
            assert r.get(6) == b"python put value"
            target.poke()                               # BPF upper-cases key 5 into key 6
            assert wait_for(lambda: r.get(6) == b"HELLO, WORLD!!!!")
        with NamedStore.open("demo") as w:              # repairs: nothing to redo
            assert w.get(6) == b"HELLO, WORLD!!!!", w.repairs
            w.destroy()
    finally:
        link.close()
        obj.close()
        target.kill()


def test_readers_follow_the_writer_new_pages_moves_and_verify(demo):
    target, pin = demo
    run_python(CREATOR, pin, str(target.pid))
    r = NamedStore.open("demo", readonly=True)
    w = NamedStore.open("demo")
    try:
        for k in range(100, 112):                       # pages 1.. appear after the reader mapped
            w.put(k, bytes([k]) * 1000)
        assert r.get(111) == bytes([111]) * 1000 and r.pages == w.pages
        assert r.verify() == [] and r.free_bytes() == w.free_bytes() + w.quarantined_bytes()
        seen = []

        def during():                                   # while key 5 is unavailable
            seen.append(r.get(5))
        w.convert({5: b"moved, bigger value!"}, while_unavailable=lambda: seen.append(
            __import__("threading").Thread(target=during).start()))
        assert wait_for(lambda: len(seen) == 2)
        assert seen[1] in (b"hello, world!!!!", b"moved, bigger value!")
        assert r.get(5) == b"moved, bigger value!"
        with pytest.raises(StoreStateError, match="read-only"):
            r.mark_switched()
    finally:
        r.close()
        w.destroy()


def test_one_store_per_task_and_map(demo):
    target, pin = demo
    run_python(CREATOR, pin, str(target.pid))
    pins_before = sorted(os.listdir(os.path.join(os.environ["UPTRKV_BPFFS"], "maps"))) \
        if os.path.isdir(os.path.join(os.environ["UPTRKV_BPFFS"], "maps")) else []
    with pytest.raises(ValueError, match="already has store 'demo'"):
        NamedStore.create(pin, "other", pid=target.pid)
    with pytest.raises(FileExistsError):               # a failed create leaves no pin behind
        with BpfObject(object_path("demo_sys_enter", "stock")) as obj2:
            obj2.load()
            NamedStore.create(obj2, "demo", pid=target.pid)
    after = sorted(os.listdir(os.path.join(os.environ["UPTRKV_BPFFS"], "maps"))) \
        if os.path.isdir(os.path.join(os.environ["UPTRKV_BPFFS"], "maps")) else []
    assert after == pins_before
    assert not os.path.exists(os.path.join(os.environ["UPTRKV_ROOT"], "other"))


def test_the_root_lock_excludes_threads_of_one_process_too(named_roots):
    """Threads share the process's flock, so root_lock must make them take turns: a second
    thread waits while the first holds it (re-entered by the holder)."""
    import threading
    from uptrkv.named import root_lock
    order: list[str] = []
    inside = threading.Event()
    with root_lock():
        with root_lock():                               # re-entrant in one thread
            def other():
                with root_lock():
                    order.append("other")
                inside.set()
            t = threading.Thread(target=other)
            t.start()
            time.sleep(0.2)
            order.append("first")
    t.join(10)
    assert inside.is_set() and order == ["first", "other"], order

