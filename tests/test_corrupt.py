"""A corrupt metadata page is reported (Python) or refused (BPF), never a crash.

The tests write raw entries into the metadata page, as a buggy or hostile
writer sharing the pages could.
"""

import os
import struct

import pytest

import uptrkv.store as store_module
from conftest import NEG
from uptrkv.allocator import Slot
from uptrkv.errors import CorruptStoreError, MissingKeyError

EFAULT, ENODATA, EAGAIN = -14, -61, -11


def poke(store, key, entry):
    store._entries[key] = entry


def raw(layout, page, off, size):
    """An entry with any fields, valid or not."""
    return (layout.init_bit | (page << layout.page_shift) | ((size - 1) << layout.size_shift)
            | (off << layout.off_shift))


def test_entry_naming_an_unregistered_page(store, bpf):
    store.put(1, b"12345678")
    bad = raw(store.layout, 5, 0, 8)
    poke(store, 1, bad)
    with pytest.raises(CorruptStoreError, match="names data page 5, but only 1 are registered") as info:
        store.get(1)
    assert info.value.key == 1 and info.value.entry == bad
    assert f"{bad:#010x}" in str(info.value)
    with pytest.raises(CorruptStoreError):
        store.put(1, b"abcdefgh")
    assert bpf.get(1)[0] == EFAULT
    assert bpf.put(1, b"abcdefgh") == EFAULT
    store.delete(1)                                   # drops the bad entry
    assert 1 not in store and bpf.get(1)[0] == NEG["ENOENT"]
    assert store.verify() == []


def test_entry_past_the_end_of_its_page(store, bpf):
    store.put(2, b"x" * 16)
    bad = raw(store.layout, 0, 4090, 16)
    poke(store, 2, bad)
    with pytest.raises(CorruptStoreError, match="past the end"):
        store.get(2)
    assert bpf.get(2)[0] == EFAULT
    assert bpf.put(2, b"y" * 16) == EFAULT
    assert any("key 2" in p for p in store.verify())


def test_duplicated_entry_is_reported_and_can_be_dropped(store, bpf):
    store.put(1, b"original")
    poke(store, 2, store.raw_entry(1))                # key 2 now shares key 1's bytes
    problems = store.verify()
    assert any("keys 1 and 2 overlap" in p for p in problems)
    assert any("key 2" in p and "not what this store wrote" in p for p in problems)
    with pytest.raises(CorruptStoreError, match="key 2") as info:
        store.put(4, b"y" * 4096)                     # needs a new page: the store syncs
    assert info.value.key == 2 and info.value.problems == problems
    assert store.get(1) == b"original"
    store.delete(2)
    assert store.verify() == []
    store.put(4, b"y" * 4096)                         # allocation works again
    assert store.get(1) == b"original" and store.get(4) == b"y" * 4096


def test_verify_reports_every_problem_at_once(store):
    for key in range(1, 5):
        store.put(key, bytes([key]) * 8)
    poke(store, 1, raw(store.layout, 6, 0, 8))
    poke(store, 2, raw(store.layout, 0, 4092, 8))
    poke(store, 3, raw(store.layout, 0, 3, 8))       # misaligned
    poke(store, 7, store.layout.busy(store.raw_entry(4)))
    problems = store.verify()
    for needle in ("key 1:", "key 2:", "key 3:", "key 7:", "data page 6", "past the end",
                   "not 8-byte aligned", "not available"):
        assert any(needle in p for p in problems), (needle, problems)


def test_misaligned_entry(store):
    store.put(3, b"12345678")
    poke(store, 3, raw(store.layout, 0, 4, 8))
    with pytest.raises(CorruptStoreError, match="not 8-byte aligned"):
        store.get(3)


def test_not_available_entry(store, bpf):
    store.put(3, b"value!!!")
    poke(store, 3, store.layout.busy(store.raw_entry(3)))
    assert bpf.get(3)[0] == EAGAIN and bpf.put(3, b"12345678") == EAGAIN
    assert bpf.delete(3) == EAGAIN
    with pytest.raises(CorruptStoreError, match="not available"):
        store.get(3)
    store.delete(3)
    with pytest.raises(MissingKeyError):
        store.get(3)


def test_write_that_never_ends(store, bpf, monkeypatch):
    monkeypatch.setattr(store_module.KVStore, "SEQ_WAIT_SECONDS", 0.05)
    store.put(4, b"sixteen bytes..!")
    entry = store.raw_entry(4)
    poke(store, 4, entry + store.layout.seq_one)      # odd: a write in progress, forever
    assert bpf.get(4)[0] == EAGAIN and bpf.put(4, b"x" * 16) == EAGAIN and bpf.delete(4) == EAGAIN
    with pytest.raises(CorruptStoreError, match="stayed odd"):
        store.get(4)
    with pytest.raises(CorruptStoreError, match="stayed odd"):
        store.put(4, b"y" * 16)
    poke(store, 4, entry)
    assert store.get(4) == b"sixteen bytes..!"


def test_delete_drops_an_entry_stuck_odd(store, bpf, monkeypatch):
    monkeypatch.setattr(store_module.KVStore, "SEQ_WAIT_SECONDS", 0.05)
    store.put(4, b"sixteen bytes..!")
    poke(store, 4, store.raw_entry(4) + store.layout.seq_one)   # a writer died inside its write
    store.delete(4)                                  # the documented remedy works
    assert store.raw_entry(4) == 0 and bpf.get(4)[0] == NEG["ENOENT"]
    store.put(4, b"again, sixteen!!")
    assert bpf.get(4) == (16, b"again, sixteen!!")


class _Interrupt(BaseException):
    pass


class _FailingView:
    """A page view whose slice store raises, as a KeyboardInterrupt inside the copy would."""

    def __init__(self, view):
        self._view = view

    def __getitem__(self, index):
        return self._view[index]

    def __setitem__(self, index, value):
        raise _Interrupt()


def test_exception_inside_a_write_leaves_the_key_usable(store, bpf):
    store.put(5, b"sixteen bytes..!")
    before = store.raw_entry(5)
    page = store._pages[store.slot(5).page]
    real = page.view
    page.view = _FailingView(real)
    try:
        with pytest.raises(_Interrupt):
            store.put(5, b"never written!!!")
    finally:
        page.view = real
    entry = store.raw_entry(5)
    assert not entry & store.layout.seq_one                    # even again, not stuck odd
    assert entry != before                                     # a reader that raced it retries
    assert store.get(5) == b"sixteen bytes..!" and bpf.get(5) == (16, b"sixteen bytes..!")
    assert bpf.put(5, b"bpf writes again") == 0
    store.put(5, b"python writes ok")
    assert bpf.get(5) == (16, b"python writes ok")
    store.delete(5)
    assert bpf.get(5)[0] == NEG["ENOENT"]


def test_bpf_without_a_metadata_page_gets_enodata(ops_obj, bpf):
    kv_map = ops_obj.map("kv_store_map")
    pidfd = os.pidfd_open(os.getpid())
    key = struct.pack("i", pidfd)
    try:
        kv_map.update(key, bytes(kv_map.value_size))  # an element whose uptrs are all NULL
        assert bpf.get(1)[0] == ENODATA
        assert bpf.put(1, b"12345678") == ENODATA
        assert bpf.delete(1) == ENODATA
    finally:
        kv_map.delete(key)
        os.close(pidfd)


def test_store_with_corrupt_entries_still_closes(ops_obj, bpf):
    from uptrkv.store import KVStore
    store = KVStore.create(ops_obj)
    store.put(1, b"12345678")
    for key in range(0, 1024, 7):
        poke(store, key, 0xFFFFFFFF)
    assert len(store.verify()) >= 100
    store.close()
    assert bpf.get(1)[0] == NEG["ESRCH"]


def test_layout_has_no_unused_entry_bits(store):
    assert store.layout.reserved_bits == 0
    assert store.layout.decode(store.layout.encode(Slot(7, 4088, 8)) | store.layout.seq_bits) == Slot(7, 4088, 8)


def test_exception_as_the_compare_and_swap_returns_leaves_the_key_usable(store, bpf, monkeypatch):
    # A KeyboardInterrupt can be raised just after the compare-and-swap made the
    # entry odd, before its True reaches _write: the store must still end the write.
    store.put(6, b"sixteen bytes..!")
    real_cas = store._words.cas

    def cas_then_interrupt(index, old, new):
        swapped = real_cas(index, old, new)
        if swapped and index == 6:
            raise _Interrupt()
        return swapped

    monkeypatch.setattr(store._words, "cas", cas_then_interrupt)
    with pytest.raises(_Interrupt):
        store.put(6, b"never written!!!")
    monkeypatch.undo()
    assert not store.raw_entry(6) & store.layout.seq_one       # even again, not stuck odd
    assert bpf.get(6) == (16, b"sixteen bytes..!")
    assert bpf.put(6, b"bpf writes again") == 0
    assert store.get(6) == b"bpf writes again"
