"""The cached get/put, typed accessors, get_into, put_many and the binding's hot map calls
behave exactly like the checked paths (speed is the bench's business, not the tests')."""

import ctypes
import errno
import struct

import pytest

from uptrkv._libbpf import LibbpfError
from uptrkv.errors import (InvalidKeyError, InvalidValueError, MissingKeyError, StoreClosedError,
                           StoreFullError)
from uptrkv.loader import BPF_NOEXIST, BpfObject
from uptrkv.objects import object_path


def test_cached_get_follows_every_change_of_the_entry(store, bpf):
    store.put(5, struct.pack("<Q", 1))
    assert store.get(5) == struct.pack("<Q", 1)            # now cached
    assert bpf.put(5, struct.pack("<Q", 2)) == 0
    assert store.get(5) == struct.pack("<Q", 2)
    store.resize(5, 16)
    assert store.get(5) == struct.pack("<Q", 2) + bytes(8)
    assert bpf.delete(5) == 0
    with pytest.raises(MissingKeyError):
        store.get(5)
    store.put(6, b"x" * 8)
    store.put(5, b"y" * 3)
    assert store.get(5) == b"yyy" and store.get(6) == b"x" * 8


def test_cached_put_checks_size_and_keys(store, bpf):
    store.put(7, bytes(8))
    store.get(7)
    with pytest.raises(InvalidValueError, match="holds 8 bytes, got 4"):
        store.put(7, bytes(4))
    for bad in (-1, 1024, 2 ** 40):
        with pytest.raises(InvalidKeyError):
            store.get(bad)
        with pytest.raises(InvalidKeyError):
            store.put(bad, bytes(8))
    store.put(7, bytearray(b"abcdefgh"))
    store.put(7, memoryview(b"ABCDEFGH"))
    assert bpf.get(7) == (8, b"ABCDEFGH")


def test_closed_store_refuses_fast_calls(ops_obj):
    from uptrkv.store import KVStore
    s = KVStore.create(ops_obj)
    s.put(1, bytes(8))
    s.get(1)
    s.close()
    for call in (lambda: s.get(1), lambda: s.put(1, bytes(8)), lambda: s.get_u64(1),
                 lambda: s.put_u64(1, 1), lambda: s.get_into(1, bytearray(8)),
                 lambda: s.put_many({2: b"x"})):
        with pytest.raises(StoreClosedError):
            call()


def test_typed_accessors(store, bpf):
    store.put(1, bytes(8))
    store.put(2, bytes(4))
    store.put_u64(1, 2 ** 64 - 1)
    assert bpf.get(1) == (8, b"\xff" * 8)
    assert bpf.put(1, struct.pack("<Q", 12345)) == 0
    assert store.get_u64(1) == 12345
    store.put_u32(2, 0xDEADBEEF)
    assert store.get_u32(2) == 0xDEADBEEF and bpf.get(2) == (4, struct.pack("<I", 0xDEADBEEF))
    with pytest.raises(InvalidValueError, match="holds 4 bytes; get_u64 needs 8"):
        store.get_u64(2)
    with pytest.raises(InvalidValueError, match="holds 8 bytes; put_u32 needs 4"):
        store.put_u32(1, 1)
    with pytest.raises(InvalidValueError, match="does not fit"):
        store.put_u64(1, -1)
    with pytest.raises(InvalidValueError, match="does not fit"):
        store.put_u32(2, 2 ** 32)
    for bad in ("1", 1.0, True, None):
        with pytest.raises(TypeError):
            store.put_u64(1, bad)
    assert store.get_u64(1) == 12345
    with pytest.raises(MissingKeyError):
        store.get_u64(3)


def test_get_into(store):
    store.put(1, b"0123456789")
    buf = bytearray(16)
    assert store.get_into(1, buf) == 10 and buf == b"0123456789" + bytes(6)
    arr = (ctypes.c_uint8 * 10)()
    assert store.get_into(1, arr) == 10 and bytes(arr) == b"0123456789"
    words = memoryview(bytearray(16)).cast("Q")
    assert store.get_into(1, words) == 10 and words.tobytes()[:10] == b"0123456789"
    with pytest.raises(InvalidValueError, match="holds 10 bytes, the buffer has 9"):
        store.get_into(1, bytearray(9))
    with pytest.raises(TypeError, match="read-only"):
        store.get_into(1, bytes(10))
    with pytest.raises(TypeError, match="writable bytes-like"):
        store.get_into(1, [0] * 10)
    with pytest.raises(MissingKeyError):
        store.get_into(2, buf)


def test_put_many_seeds_new_pages_in_one_go(store, bpf):
    items = {k: struct.pack("<QI", k * 7, k) for k in range(1024)}   # 12 bytes, 16 apart
    items[3] = b"\x01\x02\x03"
    store.put_many(items)
    assert store.pages == 4 and len(store) == 1024
    for k in (0, 3, 511, 700, 1023):
        assert bpf.get(k) == (len(items[k]), items[k])
    assert store.allocator().used_bytes == sum(map(len, items.values()))
    store.put_many([(k, struct.pack("<QI", k, 1)) for k in range(0, 1024, 100)])   # existing: in place
    assert store.get(900) == struct.pack("<QI", 900, 1) and store.get(3) == b"\x01\x02\x03"


def test_put_many_changes_nothing_on_error(store):
    store.put(1, bytes(8))
    before = (store.pages, store.keys(), store.free_bytes())
    with pytest.raises(StoreFullError):
        store.put_many({k: bytes(4096) for k in range(2, 11)})   # 9 pages' worth: needs 9
    with pytest.raises(InvalidValueError, match="key 1 holds 8 bytes, got 4"):
        store.put_many({2: bytes(8), 1: bytes(4)})
    with pytest.raises(InvalidValueError, match="appears twice"):
        store.put_many([(2, b"a"), (2, b"b")])
    with pytest.raises(TypeError, match="bytes-like"):
        store.put_many({2: 8})
    with pytest.raises(TypeError, match="keys are int"):
        store.put_many({True: b"x"})
    with pytest.raises(InvalidValueError):
        store.put_many({2: b""})
    assert (store.pages, store.keys(), store.free_bytes()) == before


def test_map_calls_through_the_binding(kernel):
    with BpfObject(object_path("bench_get")) as obj:
        obj.load()
        m = obj.map("bench_hash")
        key, value = struct.pack("<I", 3), struct.pack("<Q", 99)
        assert m.lookup(key) is None
        m.update(key, value)
        assert m.lookup(key) == value and m.lookup(bytearray(key)) == value
        with pytest.raises(LibbpfError) as err:
            m.update(key, value, BPF_NOEXIST)
        assert err.value.errno == errno.EEXIST
        with pytest.raises(ValueError, match="4-byte keys"):
            m.lookup(b"12345")
        with pytest.raises(ValueError, match="8-byte values"):
            m.update(key, b"1")
        assert m.delete(key) and not m.delete(key)
    with pytest.raises(ValueError, match="closed"):
        m.lookup(key)


# --- the fast paths keep the checked paths' safety rules -------------------------------------

def _poke(store, key, entry):
    store._entries[key] = entry          # as a buggy or hostile writer sharing the page could


@pytest.mark.parametrize("size", [8, 16])
def test_cached_key_whose_entry_becomes_unavailable_or_corrupt_is_refused(store, bpf, size):
    from uptrkv.errors import CorruptStoreError
    store.put(1, b"v" * size)
    assert store.get(1) == b"v" * size and store.get_into(1, bytearray(size)) == size   # cached
    entry = store.raw_entry(1)
    _poke(store, 1, store.layout.busy(entry))
    for call in (lambda: store.get(1), lambda: store.put(1, b"w" * size),
                 lambda: store.get_into(1, bytearray(size))):
        with pytest.raises(CorruptStoreError, match="not available"):
            call()
    lay = store.layout
    _poke(store, 1, lay.init_bit | 5 << lay.page_shift | (size - 1) << lay.size_shift)
    with pytest.raises(CorruptStoreError, match="names data page 5"):
        store.get(1)
    if size == 8:
        with pytest.raises(CorruptStoreError):
            store.get_u64(1)
        with pytest.raises(CorruptStoreError):
            store.put_u64(1, 3)
    _poke(store, 1, entry)
    assert store.get(1) == b"v" * size


def test_cached_value_being_written_is_not_read_torn(store, bpf, monkeypatch):
    import uptrkv.store as store_module
    from uptrkv.errors import CorruptStoreError
    monkeypatch.setattr(store_module.KVStore, "SEQ_WAIT_SECONDS", 0.05)
    store.put(4, b"sixteen bytes..!")
    assert store.get(4) == b"sixteen bytes..!"          # cached
    entry = store.raw_entry(4)
    _poke(store, 4, entry + store.layout.seq_one)      # odd: a write in progress
    with pytest.raises(CorruptStoreError, match="stayed odd"):
        store.get(4)
    with pytest.raises(CorruptStoreError, match="stayed odd"):
        store.get_into(4, bytearray(16))
    with pytest.raises(CorruptStoreError, match="stayed odd"):
        store.put(4, b"y" * 16)
    _poke(store, 4, entry)
    store.put(4, b"y" * 16)                            # through the sequence count: +2
    lay = store.layout
    assert (store.raw_entry(4) >> lay.seq_shift) & lay.seq_mask == 2
    assert store.get(4) == b"y" * 16 and bpf.get(4) == (16, b"y" * 16)
    for n in range(3, 12):                             # cached writes keep the cache in step
        store.put(4, bytes([n]) * 16)
        assert (store.raw_entry(4) >> lay.seq_shift) & lay.seq_mask == (2 * (n - 1)) % 16
        assert bpf.get(4) == (16, bytes([n]) * 16) and store.get(4) == bytes([n]) * 16
    assert store.verify() == []


def test_put_many_keeps_strict_types_and_the_sequence_count(store, bpf):
    store.put(1, bytes(16))
    with pytest.raises(TypeError, match="bytes-like"):
        store.put_many({2: 8})
    with pytest.raises(TypeError):
        store.put_many({True: b"x"})
    assert 2 not in store
    store.put_many({1: b"z" * 16, 2: memoryview(b"abc")})
    lay = store.layout
    assert (store.raw_entry(1) >> lay.seq_shift) & lay.seq_mask == 2
    assert bpf.get(1) == (16, b"z" * 16) and bpf.get(2) == (3, b"abc")


@pytest.mark.parametrize("size", [1, 2])
def test_bpf_small_scalar_get_respects_the_sequence_count(store, bpf, size):
    store.put(1, b"\x07" * size)
    entry = store.raw_entry(1)
    _poke(store, 1, entry + store.layout.seq_one)      # user space is writing it
    assert bpf.get(1)[0] == -errno.EAGAIN
    _poke(store, 1, entry)
    assert bpf.get(1) == (size, b"\x07" * size)


def test_bpf_scalar_get_of_a_misaligned_entry_is_efault(store, bpf):
    lay = store.layout
    store.put(1, bytes(8))
    entry = store.raw_entry(1)
    for off, size in ((4, 8), (2, 4), (1, 2)):
        _poke(store, 1, lay.init_bit | (size - 1) << lay.size_shift | off << lay.off_shift)
        assert bpf.get(1)[0] == -errno.EFAULT, (off, size)
    _poke(store, 1, entry)
    assert bpf.get(1) == (8, bytes(8))
