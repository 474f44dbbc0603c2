"""Values cross between Python and BPF in both directions, at every size class."""

import os
import random

import pytest

from conftest import NEG

SIZES = [1, 2, 4, 8, 3, 5, 16, 63, 100, 127, 128, 256, 4095, 4096]


def payload(size: int, seed: int) -> bytes:
    rnd = random.Random(seed * 7919 + size)
    return bytes(rnd.randrange(1, 256) for _ in range(size))


@pytest.mark.parametrize("size", SIZES)
def test_python_put_bpf_get(store, bpf, size):
    value = payload(size, 1)
    store.put(7, value)
    ret, got = bpf.get(7)
    assert ret == size
    assert got == value


@pytest.mark.parametrize("size", SIZES)
def test_bpf_put_python_get(store, bpf, size):
    store.put(9, bytes(size))
    value = payload(size, 2)
    assert bpf.put(9, value) == 0
    assert store.get(9) == value
    assert bpf.get(9) == (size, value)


def test_bpf_put_leaves_neighbours_alone(store, bpf):
    for key, size in enumerate([3, 5, 13, 63, 1], start=1):
        store.put(key, b"\xaa" * size)
    assert bpf.put(3, b"\x11" * 13) == 0
    assert store.get(2) == b"\xaa" * 5
    assert store.get(3) == b"\x11" * 13
    assert store.get(4) == b"\xaa" * 63


def test_all_1024_keys(store, bpf):
    values = {k: os.urandom(8) for k in range(1024)}
    for k, v in values.items():
        store.put(k, v)
    assert store.pages == 2           # 1024 x 8 bytes is exactly two pages
    assert len(store) == 1024
    for k in range(1024):
        assert bpf.get(k, 8) == (8, values[k])
    for k in range(0, 1024, 3):
        values[k] = k.to_bytes(8, "little")
        assert bpf.put(k, values[k]) == 0
    assert dict(store.items()) == values


def test_python_delete_seen_by_bpf(store, bpf):
    store.put(5, b"gone soon")
    store.delete(5)
    assert bpf.get(5)[0] == NEG["ENOENT"]
    assert 5 not in store


def test_bpf_delete_seen_by_python_and_space_reused(store, bpf):
    from uptrkv.errors import MissingKeyError
    store.put(5, b"x" * 4096)
    store.put(6, b"y" * 4096)
    assert store.pages == 2
    assert bpf.delete(5) == 0
    assert bpf.delete(5) == NEG["ENOENT"]
    with pytest.raises(MissingKeyError):
        store.get(5)
    assert store.keys() == [6]
    store.put(8, b"z" * 4096)           # takes page 0 again, no new page
    assert store.pages == 2
    assert store.slot(8).page == 0
    assert bpf.get(8) == (4096, b"z" * 4096)
