"""Gets of 1, 2, 4 and 8 bytes load from every registered page and select without a branch:
check them on 1, 2 and 8 pages, and that a page the store lacks is still -EFAULT."""

import errno

import pytest

from uptrkv.allocator import Slot

SIZES = (1, 2, 4, 8)


def value(key: int, size: int) -> bytes:
    return (key * 2654435761 & (1 << 8 * size) - 1).to_bytes(size, "little")


@pytest.mark.parametrize("pages", [1, 2, 3, 8])
def test_scalar_gets_on_every_page(store, bpf, pages):
    # keys 0..199 hold 1/2/4/8-byte values; fillers (500+) spread them over `pages` pages
    filler = {1: 0, 2: 20, 3: 40, 8: 160}[pages]
    items = {}
    for k in range(200):
        items[k] = value(k, SIZES[k % 4])
        if filler:
            items[500 + k] = bytes(filler)
    store.put_many(items)
    assert store.pages == pages
    assert {store.slot(k).page for k in range(200)} == set(range(pages))
    for k in range(200):
        assert bpf.get(k, 8) == (len(items[k]), items[k]), k
    assert bpf.get(3, 4) == (-errno.E2BIG, b"")               # an 8-byte value, 4-byte buffer


@pytest.mark.parametrize("pages,bad_page", [(1, 1), (2, 2), (3, 5), (3, 7)])
def test_entry_naming_a_missing_page_is_efault(store, bpf, pages, bad_page):
    store.put_many({500 + k: bytes(4096) for k in range(pages - 1)})
    store.put(1, bytes(8))
    assert store.pages == pages
    for size in SIZES:
        store._entries[1] = store.layout.encode(Slot(bad_page, 16, size))
        assert bpf.get(1, 8) == (-errno.EFAULT, b""), size
