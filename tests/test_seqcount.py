"""The entry's sequence count around writes of values that are not 4 or 8 bytes."""

import pytest


def seq(store, key):
    lay = store.layout
    return (store.raw_entry(key) >> lay.seq_shift) & lay.seq_mask


@pytest.mark.parametrize("size", [3, 16, 100, 4096])
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


@pytest.mark.parametrize("size", [3, 16, 4096])
def test_bpf_delete_during_a_python_get_is_a_missing_key(store, bpf, size, monkeypatch):
    from uptrkv.errors import MissingKeyError
    store.put(1, b"\x5a" * size)
    real_even = store._even
    deletes = []

    def even_then_bpf_delete(key):          # runs between the entry read and the copy
        entry = real_even(key)
        if not deletes:                     # the real BPF delete, in the kernel, once
            deletes.append(bpf.delete(key))
        return entry

    monkeypatch.setattr(store, "_even", even_then_bpf_delete)
    with pytest.raises(MissingKeyError, match="deleted by BPF"):
        store.get(1)
    monkeypatch.undo()
    assert deletes == [0]
    assert store.raw_entry(1) == 0 and 1 not in store
    store.put(1, b"\x11" * size)            # the key is usable again
    assert bpf.get(1) == (size, b"\x11" * size)


def test_bpf_write_during_a_python_get_is_retried(store, bpf, monkeypatch):
    store.put(1, b"a" * 16)
    real_even = store._even
    writes = []

    def even_then_bpf_put(key):
        entry = real_even(key)
        if not writes:                      # only during the first copy
            writes.append(bpf.put(key, b"b" * 16))
        return entry

    monkeypatch.setattr(store, "_even", even_then_bpf_put)
    assert store.get(1) == b"b" * 16        # the first copy was not clean: read again
    assert writes == [0]
