"""Strict types: values are bytes-like, keys and sizes are int (not bool)."""

import array
import ctypes

import pytest


class Pair(ctypes.Structure):
    _fields_ = [("a", ctypes.c_uint32), ("b", ctypes.c_uint32)]


@pytest.mark.parametrize("value", [8, 1.5, "eight!!!", None, [1, 2], {"a": 1}])
def test_value_that_is_not_bytes_like(store, value):
    store.put(1, b"12345678")
    with pytest.raises(TypeError, match=f"must be bytes-like.*got {type(value).__name__}"):
        store.put(1, value)
    with pytest.raises(TypeError, match="must be bytes-like"):
        store.put(2, value)
    assert store.get(1) == b"12345678"                  # put(key, 8) no longer writes 8 zero bytes
    assert 2 not in store


@pytest.mark.parametrize("key", [True, False, 1.0, "1", None, b"\x01"])
def test_key_that_is_not_an_int(store, key):
    store.put(1, b"one")
    store.put(0, b"zero")
    for call in (lambda: store.put(key, b"x"), lambda: store.get(key), lambda: store.delete(key),
                 lambda: store.resize(key, 4), lambda: key in store, lambda: store.size(key)):
        with pytest.raises(TypeError, match=f"keys are int, got {type(key).__name__}"):
            call()
    assert store.get(1) == b"one" and store.get(0) == b"zero"


@pytest.mark.parametrize("size", [8.0, "8", True])
def test_size_that_is_not_an_int(store, size):
    store.put(1, b"12345678")
    with pytest.raises(TypeError, match=f"must be an int, got {type(size).__name__}"):
        store.resize(1, size)
    assert store.size(1) == 8


@pytest.mark.parametrize("make", [bytes, bytearray, memoryview,
                                  lambda b: array.array("B", b),
                                  lambda b: Pair.from_buffer_copy(b),
                                  lambda b: memoryview(b + b"pad")[:8]])
def test_bytes_like_values(store, bpf, make):
    raw = b"\x01\x02\x03\x04\x05\x06\x07\x08"
    store.put(1, make(raw))
    assert store.get(1) == raw
    assert bpf.get(1) == (8, raw)
    store.put(1, make(raw[::-1]))
    assert bpf.get(1) == (8, raw[::-1])


def test_ctypes_structure_round_trip(store, bpf):
    store.put(5, Pair(7, 9))
    assert Pair.from_buffer_copy(store.get(5)).b == 9
    assert bpf.get(5)[0] == ctypes.sizeof(Pair)


def test_out_of_range_int_key_is_not_in_store(store):
    assert 5000 not in store and -1 not in store
