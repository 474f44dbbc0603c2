"""The metadata page: checking entries, changing them atomically, the allocation synced from them.

Every other part of a store goes through here to read or change an entry:
one aligned 32-bit store or compare-and-swap, so BPF sees a key before or
after a change, never half of one.  The allocator is this process's view of
where values lie; ``_sync()`` brings it up to date with what BPF did (a
delete), and ``_place()`` takes space, adding pages or waiting out a grace
period only when it must.
"""

from __future__ import annotations

import time
from typing import Callable

from ..allocator import Allocator, Slot, alignment
from ..errors import (CorruptStoreError, InvalidKeyError, InvalidValueError, MissingKeyError,
                      StoreClosedError, StoreFullError, StoreOwnerError)


class EntriesMixin:
    """Entries, checks, space and inspection of a KVStore (see uptrkv.store)."""

    # How long a write in progress (odd sequence count) may last before the entry counts as corrupt.
    SEQ_WAIT_SECONDS = 1.0

    # --- checks ----------------------------------------------------------------

    def _check(self) -> None:
        if self._forked:
            raise StoreOwnerError(
                f"this store belongs to process {self._owner}; this process (a fork child) may not "
                "use it: its copies of the pages are wiped; create a store of its own")
        if self._closed:
            raise StoreClosedError("the store is closed")

    def _check_key(self, key) -> None:
        if isinstance(key, bool) or not isinstance(key, int):
            raise TypeError(f"keys are int, got {type(key).__name__} {key!r}")
        if not 0 <= key < self.layout.max_keys:
            raise InvalidKeyError(f"key {key!r} is outside 0..{self.layout.max_keys - 1}")

    def _check_size(self, size, what: str) -> None:
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"{what} must be an int, got {type(size).__name__} {size!r}")
        if not 1 <= size <= self.layout.max_value_size:
            raise InvalidValueError(f"{what} is {size} bytes; values are 1..{self.layout.max_value_size} bytes")

    def _corrupt(self, key: int, entry: int, why: str) -> CorruptStoreError:
        return CorruptStoreError(
            f"key {key}: metadata entry {entry:#010x} {why}; the metadata page was changed outside "
            "this store: verify() lists every problem, delete(key) drops the entry, close() still works",
            key=key, entry=entry)

    def _valid(self, key: int, entry: int) -> Slot | None:
        """The slot a live entry names, or None for an empty key; CorruptStoreError if unusable."""
        lay = self.layout
        if not entry & self._init_bit:
            if entry:
                raise self._corrupt(key, entry, "marks the key not available, but no move of this "
                                    "store is in progress")
            return None
        if entry & lay.reserved_bits:
            raise self._corrupt(key, entry, "sets reserved bits")
        slot = lay.decode(entry)
        if slot.page >= len(self._pages):
            raise self._corrupt(key, entry, f"names data page {slot.page}, but only "
                                f"{len(self._pages)} are registered")
        if slot.end > lay.page_size:
            raise self._corrupt(key, entry, f"names bytes {slot.offset}..{slot.end - 1}, past the "
                                f"end of a {lay.page_size}-byte page")
        if slot.offset % alignment(slot.size):
            raise self._corrupt(key, entry, f"puts a {slot.size}-byte value at offset {slot.offset}, "
                                f"not {alignment(slot.size)}-byte aligned")
        return slot

    def _slot(self, key: int) -> Slot | None:
        return self._valid(key, self._entries[key])

    def _require(self, key) -> Slot:
        self._check()
        self._check_key(key)
        slot = self._slot(key)
        if slot is None:
            raise MissingKeyError(f"key {key} holds no value")
        return slot

    # --- entries ----------------------------------------------------------------

    def _location(self, entry: int) -> int:
        return entry & ~self._seq_bits

    def _even(self, key: int) -> int:
        """key's entry once no write holds it (odd sequence count); CorruptStoreError if one never ends."""
        entry = self._entries[key]
        if not entry & self._seq_one or not entry & self._init_bit:
            return entry
        deadline = time.monotonic() + self.SEQ_WAIT_SECONDS
        while entry & self._seq_one and entry & self._init_bit:
            if time.monotonic() > deadline:
                raise self._corrupt(key, entry, f"has stayed odd (a write in progress) for "
                                    f"{self.SEQ_WAIT_SECONDS} s")
            time.sleep(0)
            entry = self._entries[key]
        return entry

    def _swap(self, key: int, make: Callable[[int], int]) -> int:
        """Replace key's published entry e by make(e) atomically, once no write holds it.

        Returns the replaced entry, or 0 if the key holds no value any more
        (a BPF delete got there first).
        """
        while True:
            cur = self._even(key)
            if not cur & self._init_bit:
                return cur
            if self._words.cas(key, cur, make(cur)):
                return cur

    def _publish(self, key: int, slot: Slot | None) -> None:
        """Store key's entry while no BPF program can change it (empty or not available)."""
        entry = 0 if slot is None else self.layout.encode(slot)
        self._entries[key] = entry
        self._shadow[key] = entry

    def _forget(self, key: int) -> None:
        """key's entry is gone: quarantine the space the store last gave it."""
        old = self.layout.decode(self._shadow[key])
        self._shadow[key] = 0
        if old is not None:
            self._alloc.retire(old)

    def _sync(self) -> Allocator:
        """Quarantine the space of keys BPF deleted; CorruptStoreError for entries nobody should write."""
        bits = ~self.layout.seq_bits
        now = self._entries.tolist()
        shadow = self._shadow
        if now != shadow:
            for key, (was, is_) in enumerate(zip(shadow, now)):
                if was != is_ & bits:
                    if is_ == 0:
                        self._forget(key)
                    else:
                        problems = self.verify()
                        raise CorruptStoreError(
                            f"key {key}: metadata entry {is_:#010x} is not what this store wrote "
                            f"({was:#010x}); {len(problems)} problem(s): " + "; ".join(problems)
                            + "; delete the keys named or close the store",
                            key=key, entry=is_, problems=problems)
        return self._alloc

    def allocator(self) -> Allocator:
        """A copy of the current placement (changing it changes nothing here)."""
        self._check()
        return self._sync().copy()

    # --- space -------------------------------------------------------------------

    def _wait_grace(self) -> int:
        """One grace period; then everything quarantined before it is free.  Returns bytes freed."""
        self._check_owner()
        self._grace()
        self.grace_periods += 1
        return self._alloc.release_quarantine(keep=self._held_slots())

    def reclaim(self) -> int:
        """Free quarantined space now (one grace period); returns the bytes freed."""
        self._check()
        self._check_owner()
        self._sync()
        if not self._alloc.quarantined:
            return 0
        return self._wait_grace()

    def _place(self, size: int) -> Slot:
        """Reserve room, adding data pages if needed; StoreFullError changes nothing.

        A grace period is paid only when the value would otherwise need a new
        page (or not fit) while quarantined space could take it.
        """
        self._check_owner()
        alloc = self._alloc
        try:
            slot = alloc.find(size)
        except StoreFullError:
            slot = None
        if slot is None or slot.page >= len(self._pages):
            self._sync()
            if alloc.quarantined:
                self._wait_grace()
                slot = alloc.find(size)             # raises StoreFullError if it still cannot fit
            elif slot is None:
                alloc.find(size)
        while slot.page >= len(self._pages):
            self._add_page()
        alloc.reserve(slot)
        return slot

    # --- inspection ------------------------------------------------------------------

    def verify(self) -> list[str]:
        """Every inconsistency of the metadata page, one sentence each (empty: consistent)."""
        self._check()
        problems: list[str] = []
        placed: list[tuple[Slot, int]] = []
        for key, entry in enumerate(self._entries.tolist()):
            if not entry:
                continue
            try:
                slot = self._valid(key, entry)
            except CorruptStoreError as exc:
                problems.append(str(exc).split("; the metadata page")[0])
                continue
            if self._location(entry) != self._shadow[key]:
                problems.append(f"key {key}: metadata entry {entry:#010x} is not what this store "
                                f"wrote ({self._shadow[key]:#010x})")
            placed.append((slot, key))
        placed.sort()
        for (a, ka), (b, kb) in zip(placed, placed[1:]):
            if a.page == b.page and a.end > b.offset:
                problems.append(f"keys {ka} and {kb} overlap: page {a.page} bytes {a.offset}..{a.end - 1} "
                                f"and {b.offset}..{b.end - 1}")
        return problems

    def slot(self, key: int) -> Slot:
        """Where key's value lives."""
        return self._require(key)

    def slots(self) -> dict[int, Slot]:
        """Every key's slot, in one pass over the metadata page."""
        self._check()
        bit = self._init_bit
        return {k: self._valid(k, e) for k, e in enumerate(self._entries.tolist()) if e & bit}

    def size(self, key: int) -> int:
        return self._require(key).size

    def raw_entry(self, key: int) -> int:
        """key's metadata entry as stored (for diagnosis)."""
        self._check()
        self._check_key(key)
        return self._entries[key]

    def keys(self) -> list[int]:
        self._check()
        bit = self.layout.init_bit
        return [k for k, e in enumerate(self._entries) if e & bit]

    def items(self) -> list[tuple[int, bytes]]:
        return [(k, self.get(k)) for k in self.keys()]

    def __contains__(self, key) -> bool:
        self._check()
        if isinstance(key, bool) or not isinstance(key, int):
            raise TypeError(f"keys are int, got {type(key).__name__} {key!r}")
        return 0 <= key < self.layout.max_keys and self._slot(key) is not None

    def __len__(self) -> int:
        return len(self.keys())

    def free_bytes(self) -> int:
        """Bytes new values can take now, in all pages a store may have (quarantine excluded)."""
        self._check()
        return self._sync().free_bytes(self.layout.max_pages)

    def quarantined_bytes(self) -> int:
        """Bytes waiting for a grace period before reuse."""
        self._check()
        return self._sync().quarantined_bytes
