"""Placement of values in data pages.  Pure Python, no kernel needed.

Rules the BPF side relies on: a value never straddles a page; values of 5
bytes or more are 8-byte aligned (4-, 2-byte values to their size) so that
the common sizes are single aligned loads.  First fit in page order keeps a
small store on page 0, where BPF's page switch is always predicted.

Quarantine: a BPF program on another CPU may have read a metadata entry just
before user space changed it, and then still reads or writes the old bytes.
Space that stops holding a value is therefore *retired*, not released: it
stays occupied until the store has waited for a grace period (every program
that could have seen the old entry has returned) and calls
``release_quarantine()``.  One grace period frees everything retired before
it, so a batch of changes pays for one.
"""

from __future__ import annotations

import bisect
from typing import Iterable, NamedTuple

from .errors import StoreFullError


class Slot(NamedTuple):
    """Where a value lives: data page, offset in the page, size in bytes.

    A named tuple: the store builds one per metadata entry it decodes.
    """

    page: int
    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size


def alignment(size: int) -> int:
    if size >= 5:
        return 8
    if size >= 3:
        return 4
    return size  # 1 or 2


def _align_up(x: int, a: int) -> int:
    return -(-x // a) * a


class Allocator:
    """Tracks used extents per page; ``pages`` is how many pages exist now."""

    def __init__(self, page_size: int = 4096, max_pages: int = 8, pages: int = 1):
        if not 1 <= pages <= max_pages:
            raise ValueError(f"pages must be within 1..{max_pages}")
        self.page_size = page_size
        self.max_pages = max_pages
        self.pages = pages
        self._used: list[list[tuple[int, int]]] = [[] for _ in range(max_pages)]
        self._filled = [0] * max_pages      # bytes used per page, to skip full pages fast
        self._quarantine: set[Slot] = set() # retired: occupied until release_quarantine()

    @classmethod
    def from_slots(cls, slots: Iterable[Slot], page_size: int = 4096, max_pages: int = 8,
                   pages: int = 1) -> "Allocator":
        alloc = cls(page_size, max_pages, pages)
        for slot in slots:
            alloc.reserve(slot)
        return alloc

    def copy(self) -> "Allocator":
        other = Allocator(self.page_size, self.max_pages, self.pages)
        other._used = [list(u) for u in self._used]
        other._filled = list(self._filled)
        other._quarantine = set(self._quarantine)
        return other

    def slots(self) -> list[Slot]:
        """Slots in use, quarantined ones excluded."""
        return [s for s in (Slot(p, off, size) for p, used in enumerate(self._used) for off, size in used)
                if s not in self._quarantine]

    @property
    def quarantined(self) -> list[Slot]:
        return sorted(self._quarantine)

    @property
    def quarantined_bytes(self) -> int:
        return sum(s.size for s in self._quarantine)

    @property
    def used_bytes(self) -> int:
        """Bytes occupied, quarantined ones included."""
        return sum(self._filled)

    def free_bytes(self, pages: int | None = None) -> int:
        """Bytes an allocation may use now (quarantined bytes are not free yet)."""
        return (self.pages if pages is None else pages) * self.page_size - self.used_bytes

    def _gap(self, page: int, size: int) -> int | None:
        """Lowest aligned offset in page with room for size bytes."""
        a = alignment(size)
        cursor = 0
        for off, used in self._used[page]:
            start = _align_up(cursor, a)
            if start + size <= off:
                return start
            cursor = max(cursor, off + used)
        start = _align_up(cursor, a)
        return start if start + size <= self.page_size else None

    def find(self, size: int) -> Slot:
        """First fit; a slot on page ``self.pages`` means a page must be added."""
        if not 1 <= size <= self.page_size:
            raise ValueError(f"value size {size} outside 1..{self.page_size}")
        for page in range(self.max_pages):
            if self._filled[page] + size > self.page_size:
                continue
            off = self._gap(page, size)
            if off is not None:
                return Slot(page, off, size)
        raise StoreFullError(
            f"no room for a {size}-byte value: all {self.max_pages} pages are full "
            f"({self.free_bytes(self.max_pages)} bytes free, fragmented); delete keys or compact")

    def reserve(self, slot: Slot) -> None:
        if not 0 <= slot.page < self.max_pages or slot.offset < 0 or slot.end > self.page_size:
            raise ValueError(f"{slot} is outside the pages")
        used = self._used[slot.page]
        i = bisect.bisect_left(used, (slot.offset, 0))
        if (i > 0 and used[i - 1][0] + used[i - 1][1] > slot.offset) or \
                (i < len(used) and used[i][0] < slot.end):
            raise ValueError(f"{slot} overlaps a value already placed")
        used.insert(i, (slot.offset, slot.size))
        self._filled[slot.page] += slot.size
        self.pages = max(self.pages, slot.page + 1)

    def release(self, slot: Slot) -> None:
        """Free slot now: only for space no BPF program can have seen (never published)."""
        used = self._used[slot.page]
        try:
            used.remove((slot.offset, slot.size))
        except ValueError:
            raise ValueError(f"{slot} is not allocated") from None
        self._filled[slot.page] -= slot.size
        self._quarantine.discard(slot)

    def retire(self, slot: Slot) -> None:
        """slot no longer holds a value, but BPF may still use it: quarantine it."""
        used = self._used[slot.page]
        i = bisect.bisect_left(used, (slot.offset, slot.size))
        if i >= len(used) or used[i] != (slot.offset, slot.size):
            raise ValueError(f"{slot} is not allocated")
        if slot in self._quarantine:
            raise ValueError(f"{slot} is already quarantined")
        self._quarantine.add(slot)

    def unretire(self, slot: Slot) -> None:
        """A quarantined slot holds a value again (the same key's, at the place a program knows)."""
        if slot not in self._quarantine:
            raise ValueError(f"{slot} is not quarantined")
        self._quarantine.discard(slot)

    def shrink(self, slot: Slot, size: int) -> Slot:
        """Shrink slot in place; its tail is retired, not freed."""
        if not 1 <= size < slot.size:
            raise ValueError(f"cannot shrink {slot} to {size} bytes")
        new, tail = Slot(slot.page, slot.offset, size), Slot(slot.page, slot.offset + size, slot.size - size)
        self.release(slot)
        self.reserve(new)
        self.reserve(tail)
        self.retire(tail)
        return new

    def release_quarantine(self, keep: Iterable[Slot] = ()) -> int:
        """Free every quarantined slot but those in keep (still in use by a program
        that knows the place); call only after a grace period that began after
        the last retire().  Returns the bytes freed."""
        freed = 0
        keep = set(keep)
        for slot in [s for s in self._quarantine if s not in keep]:
            self.release(slot)
            freed += slot.size
        return freed

    def quarantine_gaps(self) -> int:
        """Quarantine every free gap of the existing pages; returns the bytes.

        For space whose last use is unknown (a store adopted after its writer
        died, which may have freed it a moment before): it waits out one grace
        period before reuse, like any freed space."""
        total = 0
        for page in range(self.pages):
            for start, end in self._gaps(page):
                slot = Slot(page, start, end - start)
                self.reserve(slot)
                self.retire(slot)
                total += slot.size
        return total

    def allocate(self, size: int) -> Slot:
        slot = self.find(size)
        self.reserve(slot)
        return slot

    def place_batch(self, sizes: dict[int, int], commit: bool = True) -> dict[int, Slot]:
        """Allocate a batch (key -> size), largest first: the one order both a
        rollout's dry run and the switch use.  One pass (place_many): the cost
        grows with the batch and the gaps, not one page scan per value.
        StoreFullError leaves the allocator unchanged; so does commit=False
        (then commit() reserves the slots returned)."""
        order = sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))
        placed = self.place_many((size for _, size in order), commit=commit)
        return {key: Slot(*t) for (key, _), t in zip(order, placed)}

    def undo_batch(self, placed: Iterable[Slot], freed: Iterable[Slot], pages: int) -> None:
        """Undo a batch that released ``freed`` and then reserved ``placed``, from
        wherever it stopped (a KeyboardInterrupt between two steps): what is
        reserved of placed is released, what is missing of freed reserved again,
        the pages count put back."""
        touched = set()
        for s in placed:
            used = self._used[s.page]
            if (s.offset, s.size) in used:
                used.remove((s.offset, s.size))
                touched.add(s.page)
        for s in freed:
            used = self._used[s.page]
            if (s.offset, s.size) not in used:
                bisect.insort(used, (s.offset, s.size))
                touched.add(s.page)
        for page in touched:    # commit() may have stopped between a page's extents and its count
            self._filled[page] = sum(n for _, n in self._used[page])
        self.pages = pages

    def _gaps(self, page: int) -> list[tuple[int, int]]:
        """Free [start, end) ranges of a page, in order."""
        gaps, cursor = [], 0
        for off, used in self._used[page]:
            if off > cursor:
                gaps.append((cursor, off))
            cursor = max(cursor, off + used)
        if cursor < self.page_size:
            gaps.append((cursor, self.page_size))
        return gaps

    def allocate_many(self, sizes: Iterable[int]) -> list[Slot]:
        """First fit for many values in one pass over the free gaps.

        Places each value exactly where allocate() would, one after the
        other, without searching the page from its start for every value
        (seeding 1024 keys one by one is quadratic).  StoreFullError leaves
        the allocator unchanged.
        """
        return [Slot(*t) for t in self.place_many(sizes)]

    def place_many(self, sizes: Iterable[int], commit: bool = True) -> list[tuple[int, int, int]]:
        """allocate_many() as (page, offset, size) tuples, for callers that encode them at once.
        commit=False only finds the places (commit() reserves them)."""
        page_size = self.page_size
        gaps: list[list[tuple[int, int]] | None] = [None] * self.max_pages
        free = [page_size - f for f in self._filled]
        out: list[tuple[int, int, int]] = []
        first = 0                      # pages before it have no room for any value left
        for size in sizes:
            if not 1 <= size <= page_size:
                raise ValueError(f"value size {size} outside 1..{page_size}")
            a = 8 if size >= 5 else (4 if size >= 3 else size)
            for page in range(first, self.max_pages):
                if free[page] < size:
                    if not free[page] and page == first:
                        first += 1
                    continue
                g = gaps[page]
                if g is None:
                    g = gaps[page] = self._gaps(page)
                for i, (start, end) in enumerate(g):
                    at = -(-start // a) * a
                    stop = at + size
                    if stop <= end:
                        if at == start:
                            if stop == end:
                                del g[i]
                            else:
                                g[i] = (stop, end)
                        elif stop == end:
                            g[i] = (start, at)
                        else:
                            g[i:i + 1] = [(start, at), (stop, end)]
                        free[page] -= size
                        out.append((page, at, size))
                        break
                else:
                    continue
                break
            else:
                raise StoreFullError(
                    f"no room for a {size}-byte value (value {len(out) + 1} of the batch): "
                    f"all {self.max_pages} pages are full or fragmented; delete keys or compact")
        if commit:
            self.commit(out)
        return out

    def commit(self, places: Iterable[tuple[int, int, int]]) -> None:
        """Reserve places found by place_many(commit=False) (nothing changed since)."""
        by_page: dict[int, list[tuple[int, int]]] = {}
        for page, off, size in places:
            by_page.setdefault(page, []).append((off, size))
        for page, extents in by_page.items():
            self._used[page] = sorted(self._used[page] + extents)
            self._filled[page] += sum(n for _, n in extents)
            self.pages = max(self.pages, page + 1)

    def can_resize_in_place(self, slot: Slot, new_size: int) -> bool:
        """Shrinking always can; growing can if the bytes after it are free and aligned."""
        if new_size <= slot.size:
            return True
        if slot.offset % alignment(new_size) or slot.offset + new_size > self.page_size:
            return False
        used = self._used[slot.page]
        i = bisect.bisect_right(used, (slot.offset, slot.size))
        return i >= len(used) or used[i][0] >= slot.offset + new_size
