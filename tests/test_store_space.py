"""Page growth, the full-store error, resize, close and re-init, on the kernel."""

import pytest

from conftest import NEG
from uptrkv.errors import (InvalidKeyError, InvalidValueError, MissingKeyError, StoreClosedError,
                           StoreFullError)


def snapshot(store):
    return {k: (store.slot(k), store.get(k)) for k in store.keys()}


def test_growth_through_all_pages_then_full(store, bpf):
    for page in range(8):
        store.put(page, bytes([page + 1]) * 4096)
        assert store.pages == page + 1
    assert store.slot(7).page == 7
    assert bpf.get(7) == (4096, b"\x08" * 4096)
    before = snapshot(store)
    with pytest.raises(StoreFullError, match="8 pages"):
        store.put(100, b"x")
    assert snapshot(store) == before
    assert store.pages == 8
    assert 100 not in store
    assert bpf.get(100)[0] == NEG["ENOENT"]


def test_growth_never_moves_existing_values(store, bpf):
    store.put(1, b"first page")
    for key in range(2, 12):
        store.put(key, bytes([key]) * 2000)
    assert store.get(1) == b"first page"
    assert bpf.get(1) == (10, b"first page")
    for key in range(2, 12):
        assert bpf.get(key) == (2000, bytes([key]) * 2000)


def test_resize_up_and_down_keeps_data(store, bpf):
    store.put(1, b"abcdefgh")
    slot = store.resize(1, 16)
    assert store.get(1) == b"abcdefgh" + bytes(8)
    assert bpf.get(1) == (16, b"abcdefgh" + bytes(8))
    assert store.resize(1, 3).offset == slot.offset
    assert store.get(1) == b"abc"
    assert bpf.get(1) == (3, b"abc")
    assert bpf.put(1, b"xyz") == 0
    store.resize(1, 4096)
    assert store.get(1) == b"xyz" + bytes(4093)
    assert bpf.get(1) == (4096, b"xyz" + bytes(4093))


def test_resize_moves_metadata_when_neighbour_blocks(store, bpf):
    store.put(1, b"12345678")
    store.put(2, b"neighbor")              # right after key 1
    old = store.slot(1)
    new = store.resize(1, 24)
    assert (new.page, new.offset) != (old.page, old.offset)
    assert store.slot(1) == new            # the metadata really points at the new place
    assert bpf.get(1) == (24, b"12345678" + bytes(16))
    assert bpf.put(1, b"B" * 24) == 0
    assert store.get(1) == b"B" * 24
    assert store.get(2) == b"neighbor"
    store.put(3, b"reuses!!")              # the old slot is free again
    assert store.slot(3) == old


def test_resize_on_full_store_changes_nothing(store):
    store.put(0, b"a" * 2000)
    store.put(8, b"b" * 2000)               # right after key 0 on page 0
    for key in range(1, 8):
        store.put(key, bytes([key]) * 4096)
    before, placement = snapshot(store), store.allocator().slots()
    with pytest.raises(StoreFullError):
        store.resize(0, 3000)
    assert snapshot(store) == before
    assert store.allocator().slots() == placement          # nothing left half-placed
    assert store.resize(0, 1000).offset == 0   # shrinking still works in place


def test_convert_whose_new_page_cannot_be_registered_changes_nothing(store, bpf, monkeypatch):
    store.put(1, b"a" * 4000)
    store.put(2, b"b" * 8)
    before, placement, pages = snapshot(store), store.allocator().slots(), store.pages
    def refused():
        raise OSError(12, "injected: page registration refused")
    monkeypatch.setattr(store, "_add_page", refused)
    with pytest.raises(OSError, match="injected"):
        store.convert({1: 4096, 2: 100})                    # needs a second page
    monkeypatch.undo()
    assert snapshot(store) == before and store.pages == pages
    assert store.allocator().slots() == placement
    assert bpf.get(1) == (4000, b"a" * 4000)                 # BPF sees the old entries again
    assert store.verify() == []
    store.convert({1: 4096, 2: 100})                          # and the same convert works now
    assert store.get(1) == b"a" * 4000 + bytes(96) and store.size(2) == 100


@pytest.mark.parametrize("at", [0, 1, 2])
def test_convert_interrupted_while_publishing_still_publishes_every_key(store, bpf, monkeypatch, at):
    for key in range(3):
        store.put(key, bytes([key + 1]) * 8)
    real, calls = store._publish, []
    def interrupted(key, slot):
        calls.append(key)
        if len(calls) == at + 1:
            real(key, slot)
            raise KeyboardInterrupt
        real(key, slot)
    monkeypatch.setattr(store, "_publish", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.convert({0: 16, 1: 16, 2: 16})
    monkeypatch.undo()
    for key in range(3):
        assert store.get(key) == bytes([key + 1]) * 8 + bytes(8)
        assert bpf.get(key) == (16, bytes([key + 1]) * 8 + bytes(8))   # available to BPF too
    assert store.verify() == []


def test_convert_gives_back_the_place_of_a_key_bpf_deleted(store, bpf, monkeypatch):
    store.put(1, b"a" * 8)
    store.put(2, b"b" * 8)
    place = store.reserve_place(16)             # a rollout reserves key 1's new place
    used = store.allocator().used_bytes
    real = store._make_unavailable
    def bpf_deletes_first(keys):                # a BPF program deletes key 1 as convert starts
        assert bpf.delete(1) == 0
        return real(keys)
    monkeypatch.setattr(store, "_make_unavailable", bpf_deletes_first)
    assert store.convert({1: 16, 2: 16}, places={1: place}).keys() == {2}
    monkeypatch.undo()
    assert 1 not in store and store.get(2) == b"b" * 8 + bytes(8)
    store.reclaim()                              # the unused place is free after a grace period
    assert store.allocator().used_bytes == used - 16 - 8 - 8 + 16
    assert store.verify() == []


@pytest.mark.parametrize("key", [-1, 1024, 5000])
def test_bad_keys(store, key):
    with pytest.raises(InvalidKeyError, match="outside 0..1023"):
        store.put(key, b"x")


@pytest.mark.parametrize("size", [0, 4097])
def test_bad_sizes(store, size):
    with pytest.raises(InvalidValueError, match="1..4096"):
        store.put(1, b"x" * size)
    store.put(2, b"ok")
    with pytest.raises(InvalidValueError, match="1..4096"):
        store.resize(2, size)
    assert store.get(2) == b"ok"
    assert store.keys() == [2]


def test_put_with_other_size_needs_resize(store):
    store.put(1, b"12345678")
    with pytest.raises(InvalidValueError, match=r"resize\(1, 4\)"):
        store.put(1, b"1234")
    assert store.get(1) == b"12345678"


def test_missing_keys(store):
    for call in (store.get, store.delete, store.size, store.slot, lambda k: store.resize(k, 4)):
        with pytest.raises(MissingKeyError, match="key 3 holds no value"):
            call(3)


def test_bpf_error_returns(store, bpf):
    store.put(1, b"12345678")
    store.put(2, b"x" * 100)
    assert bpf.get(1024)[0] == NEG["EINVAL"]
    assert bpf.get(0xFFFFFFFF)[0] == NEG["EINVAL"]
    assert bpf.get(3)[0] == NEG["ENOENT"]
    assert bpf.get(1, 4)[0] == NEG["E2BIG"]
    assert bpf.get(2, 99)[0] == NEG["E2BIG"]
    assert bpf.get(2, 100)[0] == 100
    assert bpf.put(1, b"1234") == NEG["EMSGSIZE"]
    assert bpf.put(2, b"y" * 101) == NEG["EMSGSIZE"]
    assert bpf.put(3, b"12345678") == NEG["ENOENT"]
    assert bpf.delete(1024) == NEG["EINVAL"]
    assert store.get(1) == b"12345678" and store.get(2) == b"x" * 100


def test_close_and_reinit(ops_obj, bpf):
    from uptrkv.store import KVStore
    store = KVStore.create(ops_obj)
    for key in range(8):
        store.put(key, b"v" * 4096)
    store.close()
    store.close()                           # idempotent
    assert store.closed
    assert bpf.get(0)[0] == NEG["ESRCH"]    # the element (and its pinned pages) is gone
    with pytest.raises(StoreClosedError):
        store.get(0)
    with pytest.raises(StoreClosedError):
        store.put(0, b"x")
    with KVStore.create(ops_obj) as again:
        assert again.keys() == [] and again.pages == 1
        again.put(0, b"fresh")
        assert bpf.get(0) == (5, b"fresh")


def test_second_store_for_same_task_is_refused(store, ops_obj, bpf):
    from uptrkv.store import KVStore
    store.put(1, b"kept")
    with pytest.raises(InvalidValueError, match="already has a store"):
        KVStore.create(ops_obj)
    assert store.get(1) == b"kept"
    assert bpf.get(1) == (4, b"kept")


def test_compact_moves_values_and_releases_pages(store, bpf):
    for key in range(12):
        store.put(key, bytes([key]) * 1000)
    assert store.pages == 3
    for key in range(0, 12, 2):
        store.delete(key)
    kept = {k: store.get(k) for k in store.keys()}
    assert store.quarantined_bytes() == 6000      # deleted, not reusable before a grace period
    before = store.grace_periods
    moved = store.compact()
    assert store.grace_periods == before + 1      # one for the whole compaction
    assert store.quarantined_bytes() == 0
    assert moved > 0
    assert store.pages == 2                       # 6 x 1000 bytes fit two pages
    assert {k: store.get(k) for k in store.keys()} == kept
    for key, value in kept.items():
        assert bpf.get(key) == (1000, value)      # BPF follows the moved metadata
    assert bpf.put(11, b"\x42" * 1000) == 0
    assert store.get(11) == b"\x42" * 1000
    store.put(50, b"z" * 4096)                    # a page can be added again
    assert store.pages == 3 and bpf.get(50) == (4096, b"z" * 4096)


def test_deleted_space_is_reused_after_one_grace_period(store, bpf):
    for key in range(4):
        store.put(key, bytes([key]) * 1024)      # page 0 full
    old = store.slot(1)
    store.delete(1)
    store.put(10, b"n" * 1024)                    # would need a new page: reclaims instead
    assert store.slot(10) == old and store.pages == 1
    assert store.grace_periods == 1
    store.delete(2)
    assert store.reclaim() == 1024 and store.grace_periods == 2
    assert store.reclaim() == 0 and store.grace_periods == 2     # nothing quarantined: no wait
    assert bpf.get(10) == (1024, b"n" * 1024)


def test_shrink_in_place_quarantines_the_tail(store):
    store.put(1, b"a" * 64)
    store.put(2, b"b" * 8)
    assert store.resize(1, 8).offset == 0
    assert store.quarantined_bytes() == 56
    store.put(3, b"c" * 8)
    assert store.slot(3).offset >= 72             # not in the quarantined tail
    store.reclaim()
    store.put(4, b"d" * 8)
    assert store.slot(4).offset == 8              # the tail is free after a grace period


def test_convert_into_a_reserved_place_frees_the_old_one(store):
    """convert(places=): the key's old slot is free after the switch, not leaked;
    and convert_plan(placed=) predicts the placement convert ends with."""
    for key in (1, 2, 3):
        store.put(key, bytes([key]) * 8)
    place = store.reserve_place(16)
    plan = store.convert_plan({2: 24}, placed=[1])
    assert store.convert({1: 16, 2: 24}, places={1: place})[1] == place
    assert sorted(store.allocator().slots()) == sorted(plan.slots())
    assert sorted(store.allocator().slots()) == sorted(store.slots().values())
    assert store.get(1) == b"\x01" * 8 + bytes(8) and store.verify() == []
    for key in (1, 2, 3):
        store.delete(key)
    store.reclaim()
    assert store.allocator().used_bytes == 0              # nothing left behind


def _interrupt_after(monkeypatch, owner, name, nth=1):
    """Raise KeyboardInterrupt right after the nth call of owner.name returns
    (where a Ctrl-C can land: between two steps of convert's placement)."""
    orig, calls = getattr(owner, name), [0]
    def wrapper(*args, **kwargs):
        result = orig(*args, **kwargs)
        calls[0] += 1
        if calls[0] == nth:
            raise KeyboardInterrupt
        return result
    monkeypatch.setattr(owner, name, wrapper)


@pytest.mark.parametrize("where", ["the second release of an old slot", "the commit of the batch",
                                   "the return of the placement", "the free of a reserved key's old slot"])
def test_convert_interrupted_while_placing_keeps_the_placement(store, bpf, monkeypatch, where):
    """A KeyboardInterrupt anywhere in convert's placement leaves every entry's slot
    allocated and no slot allocated that no entry names: a later put must never
    land on a live value."""
    from uptrkv.allocator import Allocator
    for key in range(1, 6):
        store.put(key, bytes([key]) * 8)
    before, placement = snapshot(store), sorted(store.allocator().slots())
    kwargs = {}
    if where == "the second release of an old slot":
        _interrupt_after(monkeypatch, Allocator, "release", 2)
    elif where == "the commit of the batch":
        _interrupt_after(monkeypatch, Allocator, "commit")
    elif where == "the return of the placement":
        _interrupt_after(monkeypatch, store, "_place_batch")
    else:
        kwargs["places"] = {4: store.reserve_place(16)}
        placement = sorted(placement + [kwargs["places"][4]])
        _interrupt_after(monkeypatch, Allocator, "release", 4)   # 3 moved keys, then key 4's old slot
    with pytest.raises(KeyboardInterrupt):
        store.convert({1: 16, 2: 16, 3: 24, **({4: 16} if kwargs else {})}, **kwargs)
    monkeypatch.undo()
    assert snapshot(store) == before and store.verify() == []
    assert sorted(store.allocator().slots()) == placement
    store.put(10, b"Z" * 8)
    assert store.slot(10) not in placement and snapshot(store) == {**before, 10: (store.slot(10), b"Z" * 8)}
    assert bpf.get(1) == (8, b"\x01" * 8)
