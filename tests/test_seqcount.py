"""The entry's sequence count around writes of values that are not 4 or 8 bytes."""

import pytest


def seq(store, key):
    lay = store.layout
    return (store.raw_entry(key) >> lay.seq_shift) & lay.seq_mask


@pytest.mark.parametrize("size", [1, 2, 3, 16, 100, 4096])
def test_each_write_advances_the_count_by_two(store, bpf, size):
    store.put(1, bytes(size))
    assert seq(store, 1) == 0
    for n in range(1, 10):                      # past the 4-bit wrap
        writer = store.put if n % 2 else (lambda k, v: bpf.put(k, v))
        assert writer(1, bytes([n]) * size) in (None, 0)
        assert seq(store, 1) == (2 * n) % 16
        assert store.get(1) == bytes([n]) * size
        assert bpf.get(1) == (size, bytes([n]) * size)
    assert store.slot(1).size == size           # the count never touches the location


@pytest.mark.parametrize("size", [4, 8])
def test_single_word_values_leave_the_entry_alone(store, bpf, size):
    store.put(1, bytes(size))
    entry = store.raw_entry(1)
    store.put(1, b"\xff" * size)
    assert bpf.put(1, b"\x11" * size) == 0
    assert store.raw_entry(1) == entry
    assert store.get(1) == b"\x11" * size
