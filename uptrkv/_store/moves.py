"""Moving values without losing a BPF write: resize, convert, compact.

A value that moves is made unavailable first (BPF gets -EAGAIN), then, after
one grace period for the whole batch, copied from bytes nobody writes any
more and published again.  Each move is announced to ``_journal()`` (a named
store records it, so that a move a killed writer left half done is rolled
forward by the next open()).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Union

from .. import _killpoints as _kp
from ..allocator import Allocator, Slot
from ..errors import CorruptStoreError, InvalidValueError, MissingKeyError
from ..loader import BPF_EXIST
from .values import as_bytes

# What convert() turns a key into: a new size (prefix kept, growth zeroed),
# a new value, or a function of the old value.
Conversion = Union[int, bytes, bytearray, memoryview, Callable[[bytes], bytes]]


@dataclass
class ConvertTimes:
    """Where a convert() spent its time, in seconds (``KVStore.last_convert``)."""

    keys: int = 0              # keys made unavailable
    unavailable: float = 0.0   # first key unavailable -> last key published
    callback: float = 0.0      # while_unavailable()
    grace: float = 0.0         # the one grace period
    publish: float = 0.0       # copy or convert, place, write and publish every key


class MovesMixin:
    """resize/convert/compact of a KVStore (see uptrkv.store)."""

    def resize(self, key: int, size: int) -> Slot:
        """Change key's size keeping its common prefix (new bytes are zero).

        In place when it shrinks or the bytes after it are free; otherwise
        the value moves through :meth:`convert` (one grace period, during
        which BPF gets -EAGAIN for this key).
        """
        old = self._require(key)
        self._check_size(size, f"new size of key {key}")
        if size == old.size:
            return old
        self._check_not_held(key, "resize")
        alloc = self._alloc
        if size < old.size or alloc.can_resize_in_place(old, size):
            new = Slot(old.page, old.offset, size)
            if size > old.size:
                self._pages[new.page].view[old.end:new.end] = bytes(size - old.size)
            if _kp.ARMED:
                _kp.reached("resize.zeroed")
            entry = self.layout.encode(new)
            if not self._swap(key, lambda e: entry) & self.layout.init_bit:
                self._forget(key)
                raise MissingKeyError(f"key {key} holds no value (deleted by BPF meanwhile)")
            if size < old.size:
                alloc.shrink(old, size)
            else:
                alloc.release(old)
                alloc.reserve(new)
            self._shadow[key] = entry
            return new
        return self.convert({key: size})[key]

    def convert(self, changes: Mapping[int, Conversion], *,
                while_unavailable: Callable[[], None] | None = None,
                places: Mapping[int, Slot] | None = None) -> dict[int, Slot]:
        """Give keys new sizes or values without losing a write, for one grace period.

        ``changes`` maps a key to a new size (prefix kept, growth zeroed), a
        new value, or a function from the old value to the new one.

        1. every key changed becomes unavailable: BPF's get/put/delete of it
           return -EAGAIN, and nothing writes its old bytes from then on;
        2. ``while_unavailable()`` runs (a rollout attaches the new version
           and detaches the old one there);
        3. one grace period: no BPF program still uses an old entry;
        4. the new values, made from old bytes nobody writes any more, go
           into free space (which now includes the old places) and are published.

        If 2 raises, or 4 finds no room (StoreFullError), every key gets its
        old entry back, bytes untouched.  Keys BPF deleted before step 1 are
        skipped.  ``places`` gives some keys a slot from reserve_place() (of
        their new size) instead of one chosen in 4.  A key still held (known
        key) after step 2 fails it with KeyHeldError.  Returns the new slots.
        """
        self._check()
        self._check_owner()
        checked: dict[int, Conversion] = {}
        for key, conv in changes.items():
            self._require(key)
            if isinstance(conv, int):
                self._check_size(conv, f"new size of key {key}")
            elif not callable(conv):
                conv = as_bytes(conv, f"new value for key {key}")
                self._check_size(len(conv), f"new value for key {key}")
            checked[key] = conv
        changes = checked
        if self._staged.keys() & changes.keys():
            raise InvalidValueError("cannot convert keys that have staged values")
        self._sync()
        t0 = time.perf_counter()
        places = dict(places or {})
        undo: dict = {}                  # filled by _place_batch, for _unplace on failure
        self._journal("marked", {key: None if callable(conv) else conv for key, conv in changes.items()},
                      places, switch=while_unavailable is not None)
        if _kp.ARMED:
            _kp.reached("convert.journaled")
        try:
            marked = self._make_unavailable(sorted(changes))
        except BaseException:
            self._journal(None)
            raise
        t1 = time.perf_counter()
        if _kp.ARMED:
            _kp.reached("convert.unavailable")
        try:
            if while_unavailable is not None:
                while_unavailable()
                self._journal("switched")
            held = self._held_slots()
            for key, (_, old) in marked.items():
                if old in held:
                    self._check_not_held(key, "convert")
            t2 = time.perf_counter()
            if _kp.ARMED:
                _kp.reached("convert.switched")
            self._wait_grace()
            t3 = time.perf_counter()
            if _kp.ARMED:
                _kp.reached("convert.grace")
            olds = {key: bytes(self._pages[s.page].view[s.offset:s.end])
                    for key, (e, s) in marked.items()}
            values = {}
            for key, old in olds.items():
                conv = changes[key]
                if isinstance(conv, int):
                    new = old[:conv] + bytes(max(0, conv - len(old)))
                elif callable(conv):
                    new = as_bytes(conv(old), f"converted value of key {key}")
                else:
                    new = conv
                self._check_size(len(new), f"converted value of key {key}")
                values[key] = new
            for key, slot in places.items():
                if key in values and slot.size != len(values[key]):
                    raise InvalidValueError(f"key {key}: the place given is {slot.size} bytes, "
                                            f"the new value {len(values[key])}")
            placed = self._place_batch({key: (marked[key][1], len(v)) for key, v in values.items()
                                        if key not in places}, undo,
                                       free_after=[marked[key][1] for key in values if key in places])
            placed.update({key: places[key] for key in values if key in places})
            self._journal("placed", {key: (slot, values[key]) for key, slot in placed.items()})
        except BaseException:
            self._unplace(undo)          # before the old entries are back: they name the old slots
            self._restore(marked)
            self._journal(None)
            raise
        # From here every key must be published, even if an exception (a
        # KeyboardInterrupt) arrives midway: a key left unavailable is lost
        # to BPF (-EAGAIN) and Python alike.  New space, unseen by BPF until
        # published: writing it again is harmless.
        items = list(placed.items())
        done = 0
        try:
            if _kp.ARMED:
                _kp.reached("convert.placed")
            for key, slot in items:
                self._pages[slot.page].view[slot.offset:slot.end] = values[key]
                if _kp.ARMED:
                    _kp.reached("convert.copying")
            while done < len(items):
                self._publish(*items[done])
                done += 1
                if _kp.ARMED:
                    _kp.reached("convert.publishing")
        except BaseException:
            for key, slot in items[done:]:
                if self._entries[key] & ~self._seq_bits == self.layout.encode(slot):
                    continue                     # published just before the exception
                self._pages[slot.page].view[slot.offset:slot.end] = values[key]
                self._publish(key, slot)
            raise
        finally:
            self._journal(None)
        for key, slot in places.items():
            if key not in placed:       # BPF deleted the key before step 1: the place is unused
                self.retire_place(slot)
        t4 = time.perf_counter()
        self.last_convert = ConvertTimes(len(marked), t4 - t0, t2 - t1, t3 - t2, t4 - t3)
        return placed

    def convert_plan(self, changes: Mapping[int, int], deleted: Iterable[int] = (),
                     placed: Iterable[int] = ()) -> Allocator:
        """Dry run of convert({key: new size}) after deleting ``deleted``: the
        placement it would end with.  ``placed`` are keys convert() is given a
        place for (places=): their old slots are freed after the batch is placed.
        StoreFullError if it cannot fit."""
        sim = self.allocator()
        slots = self.slots()
        placed = list(placed)
        for key in list(deleted) + list(changes) + placed:
            if key not in slots:
                raise MissingKeyError(f"key {key} holds no value")
        for key in deleted:
            sim.retire(slots[key])
        sim.release_quarantine()
        for key in changes:
            sim.release(slots[key])
        sim.place_batch(dict(changes))
        for key in placed:
            sim.release(slots[key])
        return sim

    def _make_unavailable(self, keys: Iterable[int]) -> dict[int, tuple[int, Slot]]:
        """Mark keys not available (BPF: -EAGAIN).  Returns key -> (old entry, old slot)."""
        marked: dict[int, tuple[int, Slot]] = {}
        try:
            for key in keys:
                if _kp.ARMED and marked:
                    _kp.reached("unavailable.some")
                old = self._swap(key, self.layout.busy)
                if not old & self.layout.init_bit:
                    self._forget(key)            # deleted by BPF before we got to it
                    continue
                marked[key] = (old, self._valid(key, old))
        except BaseException:
            self._restore(marked)
            raise
        return marked

    def _journal(self, phase: str | None, keys: Mapping | None = None,
                 places: Mapping[int, Slot] | None = None, switch: bool = False) -> None:
        """Record a move in progress where a later process finds it (NamedStore); here nothing.

        "marked": keys about to become unavailable, each with its conversion
        (a size, new bytes, or None for a function), the places given for some
        (convert(places=)) and whether a switch (while_unavailable) comes; "switched":
        it returned (a rollout's new version is attached, the old one detached);
        "placed": each key's new
        slot and value, before any byte of them is written; None: finished."""

    def _restore(self, marked: Mapping[int, tuple[int, Slot]]) -> None:
        for key, (entry, _) in marked.items():
            self._entries[key] = entry

    def _place_batch(self, moves: Mapping[int, tuple[Slot, int]], undo: dict,
                     free_after: Iterable[Slot] = ()) -> dict[int, Slot]:
        """New slots for unavailable keys after a grace period: their old slots are free
        to reuse.  ``free_after`` are the old slots of keys given a reserved place
        (convert(places=)), freed once the batch is placed (as convert_plan() does).
        Works on the allocator itself, no copy: O(moved keys + gaps).

        ``undo`` (the caller's empty dict) is filled before each change, so that
        _unplace(undo) puts the allocator back from wherever this stopped (also a
        KeyboardInterrupt between two steps, or after it returned)."""
        alloc = self._alloc
        olds = [old for old, _ in moves.values()]
        undo["pages"] = alloc.pages
        undo["freed"] = olds + list(free_after)
        for old in olds:
            alloc.release(old)
        wanted = alloc.place_batch({key: size for key, (_, size) in moves.items()}, commit=False)
        undo["placed"] = list(wanted.values())
        alloc.commit(wanted.values())
        while alloc.pages > len(self._pages):
            self._add_page()
        for old in undo["freed"][len(olds):]:
            alloc.release(old)
        return wanted

    def _unplace(self, undo: dict) -> None:
        """Undo what _place_batch() did (it filled undo); a page it registered stays (empty)."""
        if undo:
            self._alloc.undo_batch(undo.get("placed", ()), undo.get("freed", ()), undo["pages"])

    # --- compaction ------------------------------------------------------------------

    def compact(self) -> int:
        """Move values down to the lowest free offsets and release empty trailing pages.

        One grace period for the whole batch: the values that move are
        unavailable meanwhile (BPF gets -EAGAIN for them), then copied from
        bytes nobody writes and published, so no BPF write is lost; quarantined
        space is freed by the same grace period.  Returns the bytes moved.
        """
        self._check()
        self._check_owner()
        if self._staged:
            raise InvalidValueError("cannot compact while values are staged")
        alloc = self._sync()
        sim = alloc.copy()
        sim.release_quarantine(keep=self._held_slots())    # as the grace period below will
        plan: dict[int, Slot] = {}
        held = {k for _, slots in self._holds.values() for k in slots}
        for old, key in sorted((self._slot(k), k) for k in self.keys() if k not in held):
            sim.release(old)
            new = sim.find(old.size)
            if (new.page, new.offset) < (old.page, old.offset):
                sim.reserve(new)
                plan[key] = new
            else:
                sim.reserve(old)
        moved = 0
        if plan or alloc.quarantined:
            self._journal("marked", {key: slot.size for key, slot in plan.items()})
            try:
                marked = self._make_unavailable(sorted(plan))
            except BaseException:
                self._journal(None)
                raise
            if _kp.ARMED:
                _kp.reached("compact.unavailable")
            try:
                self._wait_grace()
                values = {key: bytes(self._pages[s.page].view[s.offset:s.end])
                          for key, (e, s) in marked.items()}
                trial = alloc.copy()
                for key, (_, old) in marked.items():
                    trial.release(old)
                for key in marked:
                    trial.reserve(plan[key])
            except BaseException as exc:
                self._restore(marked)
                self._journal(None)
                if isinstance(exc, ValueError):
                    raise CorruptStoreError(f"compact() found the placement changed behind its back "
                                            f"({exc}); nothing moved: {'; '.join(self.verify())}",
                                            problems=self.verify()) from exc
                raise
            self._journal("placed", {key: (plan[key], values[key]) for key in marked})
            for key, (_, old) in marked.items():
                alloc.release(old)
            for key in marked:
                alloc.reserve(plan[key])
            if _kp.ARMED:
                _kp.reached("compact.placed")
            for key in marked:
                slot = plan[key]
                self._pages[slot.page].view[slot.offset:slot.end] = values[key]
                self._publish(key, slot)
                moved += slot.size
                if _kp.ARMED:
                    _kp.reached("compact.publishing")
            self._journal(None)
        used_pages = max((s.page + 1 for s in alloc.slots() + alloc.quarantined), default=1)
        if used_pages < len(self._pages):
            self._register(BPF_EXIST, self._pages[:used_pages])
            if _kp.ARMED:
                _kp.reached("compact.unregistered")
            self._init_fast()
            for i, page in enumerate(self._pages[used_pages:], used_pages):
                page.close()
                self._backing.drop(i)
            del self._pages[used_pages:]
            alloc.pages = used_pages
        return moved
