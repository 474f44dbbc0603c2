"""Rollout on real programs attached to tp_btf/sys_enter of a target process."""

import os
import subprocess
from pathlib import Path

import pytest

from conftest import POKED, Target, wait_for
from uptrkv.errors import RolloutError, StoreFullError
from uptrkv.loader import BpfObject
from uptrkv.manifest import load_manifest
from uptrkv.objects import object_path
from uptrkv.rollout import plan, rollout, start
from uptrkv.store import KVStore

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "rollout"


def u64(raw: bytes) -> int:
    return int.from_bytes(raw[:8], "little")


@pytest.fixture
def env(kernel, copy_path, bpffs):
    target = Target()
    manifests = {v: load_manifest(EXAMPLES / f"{v}.toml", object_path(f"rollout_{v}", copy_path))
                 for v in ("v1", "v2", "v3")}

    def configure(obj):
        obj.globals.set_int("target_tgid", target.pid)

    obj = BpfObject(object_path("rollout_v1", copy_path))
    configure(obj)
    obj.load()
    store = KVStore.create(obj, pid=target.pid, pin_path=os.path.join(bpffs, "kv"))
    current = start(store, obj, manifests["v1"])
    env = type("Env", (), dict(target=target, store=store, manifests=manifests, configure=configure,
                               copy_path=copy_path, current=current))
    try:
        assert wait_for(lambda: u64(store.get(2)) >= 3)
        yield env
    finally:
        env.current.close()
        store.close()
        target.kill()


def go(env, version, name=None, **kw):
    env.current = rollout(env.store, env.current, object_path(name or f"rollout_{version}", env.copy_path),
                          env.manifests[version], configure=env.configure, **kw)
    return env.current


def content(store):
    return {k: (store.slot(k), store.get(k)) for k in store.keys()}


def test_rfc_scenario(env):
    store = env.store
    env.target.stop()
    calls_v1 = u64(store.get(2))
    env.target.cont()
    go(env, "v2")
    assert 1 not in store                                    # removed once v2 ran
    assert store.keys() == [2, 3, 4]
    assert wait_for(lambda: u64(store.get(4)) > 0)
    inherited = u64(store.get(4))
    assert inherited >= calls_v1                             # v2 read what v1 wrote
    assert wait_for(lambda: u64(store.get(2)) > inherited)   # and carries on counting
    env.target.stop()
    store.put(3, b"\xff" * 8)                                # a syscall number never looks like this
    env.target.cont()
    assert wait_for(lambda: store.get(3) != b"\xff" * 8)     # v2 writes the kept key 3


def test_chain_v1_v2_v3_v1(env):
    """The target keeps running (never stopped) through every switch."""
    store = env.store
    go(env, "v2")
    assert wait_for(lambda: u64(store.get(4)) > 0)
    before = store.grace_periods
    deployment = go(env, "v3")                               # key 3 grows 8 -> 16
    assert store.grace_periods == before + 1                 # one grace period for the switch
    assert store.size(3) == 16
    assert u64(store.get(3)[:8]) < 1024                      # the prefix is a syscall number v2 or v3 wrote
    assert wait_for(lambda: u64(store.get(3)[8:]) > 0)       # v3 writes the new half
    times = deployment.switch
    assert times.keys == 1
    assert 0 < times.both_attached <= times.unavailable
    assert times.grace <= times.unavailable
    calls = u64(store.get(2))
    go(env, "v1")                                            # back: 1 added, 4 removed, 3 shrinks
    assert store.keys() == [1, 2, 3]
    assert store.size(3) == 8
    assert wait_for(lambda: u64(store.get(1)) > 0)           # v1 runs again
    assert u64(store.get(2)) >= calls
    assert store.verify() == []


FAILURES = {
    "object missing": dict(name="rollout_no_such_object"),
    "verifier rejection": dict(name="rollout_v2_rejected"),
    "attach failure": dict(name="rollout_v2_attach_fails"),
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_failed_rollout_keeps_v1_and_store(env, failure):
    store = env.store
    env.target.stop()
    before = content(store)
    v1 = env.current
    with pytest.raises(RolloutError, match="the running version stays attached") as info:
        if failure == "object missing":
            rollout(store, v1, "/nonexistent/rollout_v2.bpf.o", env.manifests["v2"], configure=env.configure)
        else:
            go(env, "v2", **FAILURES[failure])
    assert content(store) == before
    assert env.current is v1 and all(not link.closed for link in v1.links)
    if failure == "verifier rejection":
        assert "R1 invalid mem access" in str(info.value.__cause__) or "mem_or_null" in str(info.value.__cause__)
    env.target.cont()
    runs = u64(store.get(1))
    assert wait_for(lambda: u64(store.get(1)) > runs)        # v1 (the only writer of key 1) still runs


def test_failed_configure_rolls_back(env):
    store = env.store
    env.target.stop()
    before = content(store)

    def broken(obj):
        raise RuntimeError("cannot configure")
    with pytest.raises(RolloutError, match="cannot configure"):
        rollout(store, env.current, object_path("rollout_v2", env.copy_path), env.manifests["v2"],
                configure=broken)
    assert content(store) == before


def test_store_too_full_is_refused_before_any_change(env):
    store = env.store
    for key in range(100, 107):                  # unmanaged keys fill pages 1..7
        store.put(key, b"\xee" * 4096)
    store.put(107, b"\xee" * (4096 - 24 - 7))   # page 0: no 8-aligned 8 bytes left
    env.target.stop()
    before = content(store)
    with pytest.raises(StoreFullError, match="cannot hold"):
        plan(store, env.manifests["v1"], env.manifests["v2"])
    with pytest.raises(StoreFullError):
        go(env, "v2")
    assert content(store) == before
    env.target.cont()


def test_dry_run_plan(env):
    p = plan(env.store, env.manifests["v1"], env.manifests["v3"])
    assert [k.id for k in p.added] == [4] and [k.id for k in p.removed] == [1]
    assert [(o.size, n.size) for o, n in p.resized] == [(8, 16)]
    assert [k.id for k in p.kept] == [2]
    text = str(p)
    for needle in ("rollout plan:", "removed", "added", "resized", "8 -> 16", "first 8 bytes kept",
                   "8 bytes added", "16 bytes converted"):
        assert needle in text
    assert p.bytes_added == 8 and p.bytes_converted == 16 and p.pages_during == 1


def test_running_manifest_must_match_store(env):
    env.store.delete(3)
    with pytest.raises(RolloutError, match="key 'last' \\(id 3\\) holds no value"):
        plan(env.store, env.manifests["v1"], env.manifests["v2"])


def test_failure_after_the_old_version_detached_says_what_changed(env, monkeypatch):
    # The grace period of the switch fails: by then v1 was detached and key 1
    # (removed by v2) deleted.  The error says so instead of "unchanged".
    store = env.store
    v1 = env.current
    def failing_grace():
        raise OSError("injected grace-period failure")
    monkeypatch.setattr(store, "_grace", failing_grace)
    with pytest.raises(RolloutError) as info:
        go(env, "v2")
    monkeypatch.undo()
    message = str(info.value)
    assert "injected grace-period failure" in message
    assert "the old version had been detached and is attached again" in message
    assert "keys removed by the new manifest (1) were already deleted" in message
    assert "store is unchanged" not in message
    assert store.keys() == [2, 3]                             # 1 deleted, 4 (added) undone
    assert env.current is v1 and v1.links and all(not link.closed for link in v1.links)
    runs = u64(store.get(2))
    assert wait_for(lambda: u64(store.get(2)) > runs)         # v1 runs again


@pytest.mark.parametrize("writer", ["user space", "the old version"])
def test_writes_made_while_the_new_version_loads_survive(kernel, copy_path, bpffs, writer):
    """The issue's case: v1 -> v3 (key 3 grows 8 -> 16) with a configure step that
    writes key 3 while v3 loads.  Staging used to copy key 3 before that, so the
    switch published a stale value.  The target runs throughout (never stopped); it
    enters a syscall only when poked, so every BPF write is known exactly."""
    target = Target(code=POKED, stdin=subprocess.PIPE)
    manifests = {v: load_manifest(EXAMPLES / f"{v}.toml", object_path(f"rollout_{v}", copy_path))
                 for v in ("v1", "v3")}

    def configure(obj):
        obj.globals.set_int("target_tgid", target.pid)

    obj = BpfObject(object_path("rollout_v1", copy_path))
    configure(obj)
    obj.load()
    assert wait_for(lambda: target.blocked_in_read())  # started up: quiet until poked
    store = KVStore.create(obj, pid=target.pid, pin_path=os.path.join(bpffs, "kv"))
    current = start(store, obj, manifests["v1"])
    try:
        assert u64(store.get(2)) == 0
        target.poke()                                       # v1 counts getpid() and read()
        assert wait_for(lambda: u64(store.get(2)) == 2 and target.blocked_in_read())
        assert u64(store.get(3)) == 0                       # v1's last write: read()
        # A value no write during the load leaves: a copy taken before the load (the
        # old staging) would publish 111, and v1's last write (read(): 0) would not
        # tell such a stale copy from the right value.
        store.put(3, (111).to_bytes(8, "little"))

        def configure_and_write(new_obj):
            configure(new_obj)
            if writer == "user space":
                store.put(3, (222).to_bytes(8, "little"))
            else:
                store.put(3, (222).to_bytes(8, "little"))
                target.poke()                               # v1 overwrites 222 with 39, then 0
                assert wait_for(lambda: u64(store.get(2)) == 4 and target.blocked_in_read())

        current = rollout(store, current, object_path("rollout_v3", copy_path), manifests["v3"],
                          configure=configure_and_write)
        assert store.size(3) == 16
        calls = 2 if writer == "user space" else 4
        assert u64(store.get(2)) == calls                   # no increment lost in the switch
        last = store.get(3)
        assert u64(last[:8]) == (222 if writer == "user space" else 0)   # the last write wins
        assert u64(last[8:]) == 0                           # v3 has not run yet
        target.poke()                                       # now v3 runs: it counts and writes
        assert wait_for(lambda: u64(store.get(2)) == calls + 2 and target.blocked_in_read())
        assert store.get(3) == (0).to_bytes(8, "little") + (calls + 2).to_bytes(8, "little")
    finally:
        current.close()
        store.close()
        target.kill()
