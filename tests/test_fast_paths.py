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
