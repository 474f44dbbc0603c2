"""The allocator is pure Python: checked exhaustively, no kernel needed."""

import random

import pytest

from uptrkv.allocator import Allocator, Slot, alignment
from uptrkv.errors import StoreFullError

PAGE = 4096
pytestmark = pytest.mark.nokernel


def check_invariants(alloc: Allocator) -> None:
    slots = sorted(alloc.slots())
    for s in slots:
        assert 0 <= s.page < alloc.pages <= alloc.max_pages
        assert s.offset % alignment(s.size) == 0, s
        assert s.end <= PAGE, s                     # never straddles a page
    for a, b in zip(slots, slots[1:]):
        if a.page == b.page:
            assert a.end <= b.offset, (a, b)       # no overlap


@pytest.mark.parametrize("size", range(1, 17))
def test_alignment_of_every_small_size(size):
    alloc = Allocator()
    alloc.allocate(1)
    slot = alloc.allocate(size)
    assert slot.offset == alignment(size) if size > 1 else slot.offset == 1


def test_page_fills_exactly_then_grows():
    alloc = Allocator()
    slots = [alloc.allocate(8) for _ in range(512)]
    assert {s.page for s in slots} == {0} and alloc.pages == 1
    assert alloc.allocate(8) == Slot(1, 0, 8)
    assert alloc.pages == 2


def test_4096_byte_values_take_whole_pages_and_full_raises():
    alloc = Allocator()
    for page in range(8):
        assert alloc.allocate(4096) == Slot(page, 0, 4096)
    before = alloc.slots()
    with pytest.raises(StoreFullError, match="all 8 pages are full"):
        alloc.allocate(1)
    assert alloc.slots() == before


def test_first_fit_reuses_freed_space_in_page_order():
    alloc = Allocator()
    a = alloc.allocate(100)
    alloc.allocate(100)
    alloc.allocate(4096)
    alloc.release(a)
    assert alloc.allocate(64) == Slot(0, 0, 64)


def test_reserve_rejects_overlap_and_release_rejects_unknown():
    alloc = Allocator()
    alloc.reserve(Slot(0, 8, 8))
    with pytest.raises(ValueError, match="overlaps"):
        alloc.reserve(Slot(0, 12, 8))
    with pytest.raises(ValueError, match="overlaps"):
        alloc.reserve(Slot(0, 0, 9))
    with pytest.raises(ValueError, match="outside"):
        alloc.reserve(Slot(0, 4090, 8))
    with pytest.raises(ValueError, match="not allocated"):
        alloc.release(Slot(0, 16, 8))


def test_resize_in_place_rules():
    alloc = Allocator()
    a = alloc.allocate(8)          # 0..8
    alloc.allocate(8)              # 8..16
    assert alloc.can_resize_in_place(a, 4)
    assert not alloc.can_resize_in_place(a, 9)
    c = alloc.allocate(2)          # 16..18
    assert alloc.can_resize_in_place(c, 8)
    alloc.allocate(1)              # 18..19
    assert not alloc.can_resize_in_place(c, 4)
    last = Allocator()
    tail = last.allocate(4096)
    assert not last.can_resize_in_place(Slot(0, 4092, 4), 8)
    assert last.can_resize_in_place(tail, 4096)


@pytest.mark.parametrize("seed", range(40))
def test_random_operations_keep_invariants(seed):
    rnd = random.Random(seed)
    alloc = Allocator()
    live: list[Slot] = []
    for _ in range(400):
        if live and rnd.random() < 0.4:
            alloc.release(live.pop(rnd.randrange(len(live))))
        else:
            size = rnd.choice([1, 2, 3, 4, 8, 13, 63, 256, 1000, 4095, 4096])
            free_before = alloc.free_bytes(8)
            try:
                live.append(alloc.allocate(size))
            except StoreFullError:
                assert alloc.free_bytes(8) == free_before
        check_invariants(alloc)
        rebuilt = Allocator.from_slots(live, pages=alloc.pages)
        assert sorted(rebuilt.slots()) == sorted(live) == sorted(alloc.slots())
        assert alloc.used_bytes == sum(s.size for s in live)


def test_copy_is_independent():
    alloc = Allocator()
    alloc.allocate(8)
    other = alloc.copy()
    other.allocate(4096)
    assert len(alloc.slots()) == 1 and alloc.pages == 1


@pytest.mark.parametrize("seed", range(200))
def test_allocate_many_places_like_allocate_one_by_one(seed):
    rnd = random.Random(seed)
    a = Allocator(4096, 8, 1)
    for _ in range(rnd.randrange(0, 40)):                  # a used, fragmented store
        try:
            a.allocate(rnd.choice([1, 2, 3, 4, 5, 8, 16, 24, 100, 512]))
        except StoreFullError:
            break
    slots = a.slots()
    for s in rnd.sample(slots, len(slots) // 3):
        a.release(s)
    sizes = [rnd.choice([1, 2, 3, 4, 5, 8, 16, 24, 100, 512, 1000, 4096]) for _ in range(rnd.randrange(1, 60))]
    one, many = a.copy(), a.copy()
    try:
        expected = [one.allocate(size) for size in sizes]
    except StoreFullError:
        expected = None
    try:
        got = many.allocate_many(sizes)
    except StoreFullError:
        got = None
        assert (many.slots(), many.used_bytes, many.pages) == (a.slots(), a.used_bytes, a.pages)
    assert got == expected
    if expected is not None:
        assert (many.slots(), many.used_bytes, many.pages) == (one.slots(), one.used_bytes, one.pages)
