"""Known keys: KV_KEY() places resolved into .rodata before load, held while loaded."""

import struct

import pytest

from conftest import Target, wait_for
from uptrkv import known_keys
from uptrkv.errors import KeyHeldError, LayoutError, MissingKeyError
from uptrkv.loader import BpfObject, LoadError
from uptrkv.manifest import read_object
from uptrkv.objects import object_path
from uptrkv.rollout import rollout, start
from uptrkv.store import KVStore

COUNTER, SMALL, HALF, BLOB, UNUSED = 10, 11, 12, 13, 14
SEED = {COUNTER: struct.pack("<Q", 41), SMALL: b"\x07", HALF: struct.pack("<H", 1000),
        BLOB: struct.pack("<3Q", 5, 6, 0)}


@pytest.fixture
def known(store, copy_path):
    """test_known_keys loaded on the test store with its keys seeded and resolved."""
    store.put(0, bytes(3))                       # something before them, so offsets are not 0
    store.put_many(SEED)
    with BpfObject(object_path("test_known_keys", copy_path)) as obj:
        known_keys.load(obj, store)
        yield obj


def bump(obj):
    obj.program("known_bump").test_run()
    assert obj.globals.get_int("ret") == 0


def test_declared_lists_only_used_keys(kernel, copy_path):
    with BpfObject(object_path("test_known_keys", copy_path)) as obj:
        keys = known_keys.declared(obj)
    assert [(k.name, k.id, k.size) for k in keys] == [
        ("counter", COUNTER, 8), ("small", SMALL, 1), ("half", HALF, 2), ("blob", BLOB, 24)]


def test_bpf_reads_and_writes_through_resolved_places(known, store):
    bump(known)
    assert known.globals.get_int("seen_counter") == 42
    assert store.get_u64(COUNTER) == 42
    assert store.get(SMALL) == b"\x09"
    assert store.get(HALF) == struct.pack("<H", 1003)
    assert struct.unpack("<3Q", known.globals.read("seen_blob")) == (5, 6, 0)
    assert struct.unpack("<3Q", store.get(BLOB)) == (5, 6, 11)
    store.put_u64(COUNTER, 100)                  # user space writes are seen at once
    bump(known)
    assert store.get_u64(COUNTER) == 101
    assert store.get(0) == bytes(3)              # the neighbour is untouched


def test_unresolved_object_is_rejected_by_the_verifier(store, copy_path):
    with BpfObject(object_path("test_known_keys", copy_path)) as obj:
        obj.map("kv_store_map").reuse_fd(store.map.fd)
        with pytest.raises(LoadError) as err:
            obj.load()
    assert "65535" in err.value.verifier_log      # the KV_KNOWN_UNRESOLVED offset, past the page


def test_missing_key_or_wrong_size_is_refused_before_load(store, copy_path):
    store.put_many({k: v for k, v in SEED.items() if k != HALF})
    with BpfObject(object_path("test_known_keys", copy_path)) as obj:
        with pytest.raises(MissingKeyError, match=r"'half' \(id 12\).*put it \(2 bytes\)"):
            known_keys.load(obj, store)
        assert not obj.loaded
    assert store.holders(COUNTER) == []          # nothing held after the failure
    store.put(HALF, bytes(4))
    with BpfObject(object_path("test_known_keys", copy_path)) as obj:
        with pytest.raises(LayoutError, match=r"'half' \(id 12\) as 2 bytes, the store holds 4"):
            known_keys.load(obj, store)


def test_held_keys_cannot_move_until_the_object_closes(store, copy_path):
    store.put(0, bytes(3))
    store.put_many(SEED)
    obj = BpfObject(object_path("test_known_keys", copy_path))
    known_keys.load(obj, store)
    where = {k: store.slot(k) for k in SEED}
    assert store.holders(COUNTER) == [obj]
    with pytest.raises(KeyHeldError, match=r"cannot resize key 10: .*test_known_keys.*roll out"):
        store.resize(COUNTER, 16)
    with pytest.raises(KeyHeldError, match="cannot delete key 13"):
        store.delete(BLOB)
    store.delete(0)                               # not held: frees the start of page 0
    store.compact()                               # moves nothing that is held
    assert {k: store.slot(k) for k in SEED} == where
    store.put(COUNTER, struct.pack("<Q", 7))      # writing in place is fine
    obj.close()
    assert store.holders(COUNTER) == []
    store.resize(COUNTER, 16)
    store.delete(BLOB)


def test_space_under_a_bpf_deleted_held_key_is_not_reused(known, store, bpf):
    slot = store.slot(COUNTER)
    assert bpf.delete(COUNTER) == 0               # BPF unpublishes it; the known program still uses it
    assert COUNTER not in store
    store.put_many({k: bytes(8) for k in range(100, 200)})
    assert all(store.slot(k).page != slot.page or store.slot(k).end <= slot.offset or
               store.slot(k).offset >= slot.end for k in range(100, 200))
    bump(known)
    assert known.globals.get_int("seen_counter") == 42     # still its own bytes
    known.close()                                 # the last hold goes: now the space is free
    store.put(COUNTER, bytes(8))
    assert store.slot(COUNTER) == slot


@pytest.fixture
def live(kernel, copy_path):
    """known_v1 attached to sys_enter of a live target, its store owned here."""
    target = Target()
    manifests = {v: read_object(object_path(f"known_{v}", copy_path)) for v in ("v1", "v2")}

    def configure(obj):
        obj.globals.set_int("target_tgid", target.pid)

    with BpfObject(object_path("test_kv_ops", copy_path)) as host:
        host.load()
        store = KVStore.create(host, pid=target.pid)
    store.put_many({k.id: k.initial() for k in manifests["v1"].keys})
    obj = BpfObject(object_path("known_v1", copy_path))
    configure(obj)
    known_keys.load(obj, store)
    env = type("Env", (), dict(target=target, store=store, manifests=manifests, configure=configure,
                               copy_path=copy_path, current=start(store, obj, manifests["v1"])))
    try:
        yield env
    finally:
        env.current.close()
        store.close()
        target.kill()


def test_live_program_counts_through_known_keys_and_rollout_moves_them(live):
    store = live.store
    assert wait_for(lambda: store.get_u64(2) >= 5)            # BPF in the target, on another CPU
    assert wait_for(lambda: store.get_u64(3) != 0)            # a syscall number
    with pytest.raises(KeyHeldError):
        store.resize(3, 16)
    before = store.slot(3)
    v1 = live.current.obj
    live.current = rollout(store, live.current, object_path("known_v2", live.copy_path),
                           live.manifests["v2"], configure=live.configure)
    assert store.size(3) == 16 and store.slot(3) != before    # moved, by the rollout
    assert store.holders(3) == [live.current.obj] and v1.closed
    calls = store.get_u64(2)

    def v2_wrote():
        nr, seen = struct.unpack("<2Q", store.get(3))
        return seen > calls and nr < 1024
    assert wait_for(v2_wrote)                                  # v2's constants name the new place
    assert store.get_u64(2) > calls                            # and calls went on from v1's count


def test_switch_failing_after_the_old_detach_gives_the_old_version_its_holds_back(live, monkeypatch):
    from uptrkv.errors import RolloutError
    store = live.store
    assert wait_for(lambda: store.get_u64(2) >= 5)
    v1 = live.current.obj
    before = store.slot(3)
    reserved = []
    real_reserve, real_grace = store.reserve_place, store._wait_grace

    def reserve(size):
        reserved.append(real_reserve(size))
        return reserved[-1]

    def failing_grace():
        if not live.current.links:                 # inside the switch: v1 detached, v2 attached
            raise OSError("injected failure after the old version detached")
        return real_grace()
    monkeypatch.setattr(store, "reserve_place", reserve)
    monkeypatch.setattr(store, "_wait_grace", failing_grace)
    with pytest.raises(RolloutError, match="injected failure"):
        rollout(store, live.current, object_path("known_v2", live.copy_path),
                live.manifests["v2"], configure=live.configure)
    monkeypatch.undo()
    assert live.current.links and not v1.closed                 # v1 attached again
    assert store.holders(3) == [v1] and store.slot(3) == before and store.size(3) == 8
    with pytest.raises(KeyHeldError):
        store.resize(3, 16)
    assert [s.size for s in reserved] == [16]                    # v2's place for key 3, never published,
    alloc = store.allocator()                                    # freed by the grace period v2's close waited
    assert reserved[0] not in alloc.slots() and reserved[0] not in alloc.quarantined
    assert all(s != reserved[0] for s in store.slots().values())
    calls = store.get_u64(2)
    assert wait_for(lambda: store.get_u64(2) > calls)            # v1 still counts
    live.current = rollout(store, live.current, object_path("known_v2", live.copy_path),
                           live.manifests["v2"], configure=live.configure)
    assert store.size(3) == 16 and store.holders(3) == [live.current.obj]


def test_put_of_a_bpf_deleted_held_key_goes_back_to_its_held_place(known, store, bpf):
    slot = store.slot(COUNTER)
    assert bpf.delete(COUNTER) == 0               # BPF unpublishes it; the known program still uses it
    store.put(COUNTER, struct.pack("<Q", 7))      # republished while held: where the program looks
    assert store.slot(COUNTER) == slot
    bump(known)
    assert store.get_u64(COUNTER) == 8
    assert bpf.delete(COUNTER) == 0 and bpf.delete(BLOB) == 0
    with pytest.raises(KeyHeldError, match="cannot put key 10 anew"):
        store.put_many({COUNTER: bytes(16), 300: bytes(8)})       # not the held size: nothing changes
    assert COUNTER not in store and 300 not in store
    store.put_many({COUNTER: struct.pack("<Q", 1), BLOB: struct.pack("<3Q", 1, 2, 0), 300: bytes(8)})
    assert store.slot(COUNTER) == slot
    bump(known)
    assert store.get_u64(COUNTER) == 2 and struct.unpack("<3Q", store.get(BLOB)) == (1, 2, 3)
    assert store.verify() == []


def test_staged_value_of_a_held_key_cannot_move_it(known, store):
    slot = store.slot(COUNTER)
    store.stage(COUNTER, struct.pack("<Q", 7))
    with pytest.raises(KeyHeldError, match="cannot publish a staged value for key 10"):
        store.publish_staged()
    assert store.slot(COUNTER) == slot
    bump(known)
    assert store.get_u64(COUNTER) == 42
