"""Reading and writing values: the fast paths, the checked paths, put_many and delete.

4- and 8-byte values are single aligned loads and stores; other sizes are
written under the entry's sequence count (a seqlock in 4 bits) and read until
a copy is clean.  A named store logs each in-place write of those sizes
first, so a writer killed midway is redone (uptrkv.named_store).
"""

from __future__ import annotations

import time

from .. import _killpoints as _kp
from ..allocator import Slot
from ..errors import CorruptStoreError, InvalidValueError, MissingKeyError, StoreFullError

_BYTES = (bytes, bytearray)   # values whose len() is their size in bytes: taken as they are
_from_bytes = int.from_bytes  # a module global: half the cost of looking it up on int per put


def as_bytes(value, what: str) -> bytes:
    """The bytes of a bytes-like value (buffer protocol); TypeError for anything else."""
    if type(value) is bytes:
        return value
    if isinstance(value, (str, int, float)) or value is None:
        raise TypeError(f"{what} must be bytes-like (bytes, bytearray, memoryview, a ctypes "
                        f"structure...), got {type(value).__name__} {value!r}")
    try:
        with memoryview(value) as view:
            return view.tobytes()
    except TypeError:
        raise TypeError(f"{what} must be bytes-like (bytes, bytearray, memoryview, a ctypes "
                        f"structure...), got {type(value).__name__}") from None


class ValuesMixin:
    """get/put and friends of a KVStore (see uptrkv.store)."""

    # --- values ------------------------------------------------------------------

    def _read(self, key: int, slot: Slot) -> bytes:
        page = self._pages[slot.page]
        if slot.size == 8:
            return page.u64[slot.offset >> 3].to_bytes(8, "little")
        if slot.size == 4:
            return page.u32[slot.offset >> 2].to_bytes(4, "little")
        want = self.layout.encode(slot)
        deadline = None
        while True:        # seqlock reader: a copy taken while no write was in progress
            entry = self._even(key)
            if self._location(entry) != want:
                # A BPF delete (entry 0) or an entry this store did not write.
                slot = self._valid(key, entry)
                if slot is None:
                    raise MissingKeyError(f"key {key} holds no value (deleted by BPF meanwhile)")
                raise self._corrupt(key, entry, "changed while it was read")
            data = bytes(page.view[slot.offset:slot.end])
            if self._entries[key] == entry:
                return data
            # Changed during the copy (a write, or a BPF delete): read the entry again.
            if deadline is None:
                deadline = time.monotonic() + self.SEQ_WAIT_SECONDS
            elif time.monotonic() > deadline:
                raise CorruptStoreError(
                    f"key {key}: the value changed during every copy for {self.SEQ_WAIT_SECONDS} s "
                    "(writes without pause); retry get() later", key=key, entry=self._entries[key])

    def _write(self, key: int, slot: Slot, data: bytes) -> None:
        """Overwrite a published value in place."""
        page = self._pages[slot.page]
        if slot.size == 8:
            page.u64[slot.offset >> 3] = int.from_bytes(data, "little")
            return
        if slot.size == 4:
            page.u32[slot.offset >> 2] = int.from_bytes(data, "little")
            return
        # Nobody else changes an odd entry, so the count must go even again whatever
        # happens once it is odd (an exception, a KeyboardInterrupt even as the
        # compare-and-swap returns): a key left odd is unusable for BPF (-EAGAIN) and
        # Python alike.  The copy is one slice store, so the value is either the old
        # or the new one; readers retry either way.
        words = self._words
        words.forget()
        wal = self._wal
        if wal is not None:      # a named store: a writer killed mid-copy is redone from the log
            wal.begin(key, self.layout.encode(slot), data)
            if _kp.ARMED:
                _kp.reached("write.logged")
        try:
            while True:    # seqlock writer: even -> odd by compare-and-swap, copy, even again
                entry = self._even(key)
                if not entry & self._init_bit:
                    raise MissingKeyError(f"key {key} holds no value (deleted by BPF meanwhile)")
                if words.cas(key, entry, entry + self._seq_one):
                    break
            if _kp.ARMED:
                _kp.reached("write.odd")
                half = slot.size // 2
                page.view[slot.offset:slot.offset + half] = data[:half]
                _kp.reached("write.torn")
            page.view[slot.offset:slot.end] = data
        finally:           # inline (no call): a pending signal could raise at a call's return
            if words._want is not None and words._expected.value == words._want:    # words.swapped()
                self._entries[key] = ((entry & ~self._seq_bits)
                                      | ((entry + 2 * self._seq_one) & self._seq_bits))
            if wal is not None:
                if _kp.ARMED:
                    _kp.reached("write.even")
                wal.end()

    # --- public API ------------------------------------------------------------

    # --- fast paths ---------------------------------------------------------
    #
    # get/put and the typed accessors compare the key's entry with the one
    # they last decoded for it (one list index, one load from the metadata
    # page) and then touch the page directly: no decode, no Slot, no method
    # call.  The cached entry is always a published one with an even
    # sequence count, so an entry that is being written (odd), unavailable,
    # deleted, moved, corrupt, or wiped in a fork child (all zero) never
    # matches: those take the checked path, which raises what it must
    # (StoreOwnerError, CorruptStoreError, ...).  4- and 8-byte values are
    # single aligned accesses; other sizes are read as seqlock readers (the
    # entry checked again after the copy) and written by the checked path.

    def _init_fast(self) -> None:
        # key -> (entry, page mmap, slice, size, page, offset // 8, offset // 4)
        self._fast: list[tuple | None] = [None] * self.layout.max_keys

    def _remember(self, key: int, slot: Slot) -> None:
        entry = self._entries[key]
        if entry & self._seq_one or entry & ~self._seq_bits != self.layout.encode(slot):
            self._fast[key] = None            # being written or changed: no cache this time
            return
        page = self._pages[slot.page]
        # (entry, page mmap, slice, size, view for the size's word, word index, page)
        if slot.size == 8:
            words, index = page.u64, slot.offset >> 3
        elif slot.size == 4:
            words, index = page.u32, slot.offset >> 2
        else:
            words, index = None, -1
        self._fast[key] = (entry, page.mm, slice(slot.offset, slot.end), slot.size, words, index, page)

    def _hit(self, key):
        """The cached place of key's value, or None (then take the checked path)."""
        if key.__class__ is int and key >= 0:
            try:
                hit = self._fast[key]
                if hit[0] == self._entries[key]:
                    return hit
            except (IndexError, TypeError):
                pass
        return None

    # get/put/get_u64/put_u64 repeat _hit() inline: a method call costs as much
    # as the rest of the fast path.

    def get(self, key: int) -> bytes:
        """key's value (a copy)."""
        if key.__class__ is int and key >= 0:
            try:
                hit = self._fast[key]
                if hit[0] == self._entries[key]:
                    size = hit[3]
                    if size == 8:
                        return hit[4][hit[5]].to_bytes(8, "little")
                    if size == 4:
                        return hit[4][hit[5]].to_bytes(4, "little")
                    data = hit[1][hit[2]]
                    if self._entries[key] == hit[0]:     # no write began or ended meanwhile
                        return data
            except (IndexError, TypeError):
                pass
        return self._get_checked(key)

    def put(self, key: int, value) -> None:
        """Set key's value; a new key gets space, an existing key keeps its size."""
        if value.__class__ in _BYTES and key.__class__ is int and key >= 0:
            try:
                hit = self._fast[key]
                if hit[0] == self._entries[key] and len(value) == hit[3]:
                    if hit[5] >= 0:
                        hit[4][hit[5]] = _from_bytes(value, "little")
                        return
                    if self._write_cached(key, hit, value):
                        return
            except (IndexError, TypeError):
                pass
        self._put_checked(key, value)

    def _write_cached(self, key: int, hit: tuple, value) -> bool:
        """_write() at the cached place: the seqlock writer without decoding the entry.
        False if the entry changed meanwhile (the checked path then decides)."""
        entry = hit[0]
        words = self._words
        words.forget()
        wal = self._wal
        if wal is not None:
            wal.begin(key, entry & ~self._seq_bits, value)
        try:
            if not words.cas(key, entry, entry + self._seq_one):
                return False
            hit[1][hit[2]] = value
        finally:          # as in _write(): the count goes even again whatever happens
            if words._want is not None and words._expected.value == words._want:    # words.swapped()
                new = (entry & ~self._seq_bits) | ((entry + 2 * self._seq_one) & self._seq_bits)
                self._entries[key] = new
                self._fast[key] = (new,) + hit[1:]
            if wal is not None:
                wal.end()
        return True

    def get_u64(self, key: int) -> int:
        """An 8-byte value as an unsigned little-endian integer."""
        if key.__class__ is int and key >= 0:
            try:
                hit = self._fast[key]
                if hit[0] == self._entries[key] and hit[3] == 8:
                    return hit[4][hit[5]]
            except (IndexError, TypeError):
                pass
        return int.from_bytes(self._sized(key, 8, "get_u64"), "little")

    def put_u64(self, key: int, value: int) -> None:
        """Store an unsigned integer in an existing 8-byte key (one aligned store)."""
        if key.__class__ is int and key >= 0 and value.__class__ is int and 0 <= value < 1 << 64:
            try:
                hit = self._fast[key]
                if hit[0] == self._entries[key] and hit[3] == 8:
                    hit[4][hit[5]] = value
                    return
            except (IndexError, TypeError):
                pass
        self._put_int(key, value, 8, "put_u64")

    def get_u32(self, key: int) -> int:
        """A 4-byte value as an unsigned little-endian integer."""
        hit = self._hit(key)
        if hit is not None and hit[3] == 4:
            return hit[4][hit[5]]
        return int.from_bytes(self._sized(key, 4, "get_u32"), "little")

    def put_u32(self, key: int, value: int) -> None:
        """Store an unsigned integer in an existing 4-byte key (one aligned store)."""
        hit = self._hit(key)
        if hit is not None and hit[3] == 4 and value.__class__ is int and 0 <= value < 1 << 32:
            hit[4][hit[5]] = value
            return
        self._put_int(key, value, 4, "put_u32")

    def get_into(self, key: int, buffer) -> int:
        """Copy key's value into the start of a writable buffer; return its size."""
        hit = self._hit(key)
        if hit is None or hit[3] == 8 or hit[3] == 4:
            data = self.get(key)                 # checked, or one aligned load
        else:
            data = None
        size = len(data) if data is not None else hit[3]
        if buffer.__class__ is bytearray and size <= 64:   # small: a bytes copy is cheaper than views
            if len(buffer) < size:
                raise InvalidValueError(f"key {key} holds {size} bytes, the buffer has {len(buffer)}")
            if data is None:
                data = self.get(key)
            buffer[:size] = data
            return size
        try:
            dst = memoryview(buffer)
        except TypeError:
            raise TypeError(f"get_into needs a writable bytes-like buffer, got {type(buffer).__name__}") from None
        if dst.readonly:
            raise TypeError(f"get_into needs a writable buffer, {type(buffer).__name__} is read-only")
        if dst.format != "B" or dst.ndim != 1:
            dst = dst.cast("B")
        if dst.nbytes < size:
            raise InvalidValueError(f"key {key} holds {size} bytes, the buffer has {dst.nbytes}")
        if data is None:
            dst[:size] = hit[6].view[hit[2]]
            if self._entries[key] == hit[0]:     # seqlock reader: nothing wrote it meanwhile
                return size
            data = self._get_checked(key)
        dst[:size] = data
        return size

    def _sized(self, key: int, size: int, what: str) -> bytes:
        slot = self._require(key)
        if slot.size != size:
            raise InvalidValueError(f"key {key} holds {slot.size} bytes; {what} needs {size}")
        data = self._read(key, slot)
        self._remember(key, slot)
        return data

    def _put_int(self, key: int, value: int, size: int, what: str) -> None:
        if value.__class__ is not int:
            raise TypeError(f"{what} takes an int, got {type(value).__name__}")
        if not 0 <= value < 1 << (8 * size):
            raise InvalidValueError(f"{what}: {value} does not fit {size} unsigned bytes")
        self._sized(key, size, what)
        self.put(key, value.to_bytes(size, "little"))

    # --- checked paths ---------------------------------------------------------

    def _get_checked(self, key: int) -> bytes:
        slot = self._require(key)
        data = self._read(key, slot)
        self._remember(key, slot)
        return data

    def _put_checked(self, key: int, value) -> None:
        self._check()
        self._check_key(key)
        value = as_bytes(value, f"value for key {key}")
        self._check_size(len(value), f"value for key {key}")
        slot = self._slot(key)
        if slot is not None:
            if slot.size != len(value):
                raise InvalidValueError(
                    f"key {key} holds {slot.size} bytes, got {len(value)}; resize({key}, {len(value)}) first")
            self._write(key, slot, value)
            return
        if key in self._staged:
            raise InvalidValueError(f"key {key} has a staged value; publish_staged() or discard_staged() first")
        held = self._held_place(key, len(value))
        if self._shadow[key]:
            self._forget(key)                    # BPF deleted it: its old space waits out a grace period
        if held is not None:
            self._alloc.unretire(held)           # back where the programs holding it look
            slot = held
        else:
            slot = self._place(len(value))
        self._pages[slot.page].view[slot.offset:slot.end] = value
        if _kp.ARMED:
            _kp.reached("put.written")
        self._publish(key, slot)

    def put_many(self, items) -> None:
        """Put many keys at once: one placement pass and one page registration.

        items is a mapping or (key, value) pairs.  Existing keys keep their
        size.  Everything is checked and placed before anything is written:
        on an error (bad key or value, StoreFullError) the store is unchanged.
        New keys are published after their bytes are written.
        """
        self._check()
        pairs = list(items.items() if hasattr(items, "items") else items)
        pairs_value: dict[int, bytes] = {}
        seen: set[int] = set()
        updates, new_keys, new_values = [], [], []
        for key, value in pairs:
            self._check_key(key)
            if key in seen:
                raise InvalidValueError(f"key {key} appears twice in put_many")
            seen.add(key)
            value = as_bytes(value, f"value for key {key}")
            size = len(value)
            self._check_size(size, f"value for key {key}")
            slot = self._slot(key)
            if slot is not None:
                if slot.size != size:
                    raise InvalidValueError(
                        f"key {key} holds {slot.size} bytes, got {size}; resize({key}, {size}) first")
                updates.append((key, slot, value))
            else:
                if key in self._staged:
                    raise InvalidValueError(
                        f"key {key} has a staged value; publish_staged() or discard_staged() first")
                new_keys.append(key)
                new_values.append(value)
                pairs_value[key] = value
        held = {}
        for key, value in zip(new_keys, new_values):
            slot = self._held_place(key, len(value))
            if slot is not None:
                held[key] = slot
        if held:                                 # known keys BPF deleted: back to their held places
            new_values = [v for k, v in zip(new_keys, new_values) if k not in held]
            new_keys = [k for k in new_keys if k not in held]
        if new_keys:
            alloc = self._sync()
            for key in new_keys:
                if self._shadow[key]:
                    self._forget(key)            # BPF deleted it: its old space waits out a grace period
            sizes = [len(v) for v in new_values]
            trial = alloc.copy()
            try:
                places = trial.place_many(sizes)
            except StoreFullError:
                places = None
            if (places is None or max(p for p, _, _ in places) >= len(self._pages)) and alloc.quarantined:
                self._wait_grace()               # quarantined space may take them without a new page
                trial = self._alloc.copy()
                places = trial.place_many(sizes)     # StoreFullError: nothing changed
            elif places is None:
                trial.place_many(sizes)              # raises the StoreFullError
            need = max(p for p, _, _ in places) + 1
            while len(self._pages) < need:
                self._add_page()
            self._alloc = trial
        if held:
            alloc = self._sync()
            for key, slot in held.items():
                if self._shadow[key]:
                    self._forget(key)
                alloc.unretire(slot)
                self._pages[slot.page].view[slot.offset:slot.end] = pairs_value[key]
                self._publish(key, slot)
        for key, slot, value in updates:
            self._write(key, slot, value)
        if new_keys:
            views = [p.view for p in self._pages]
            for (page, off, size), value in zip(places, new_values):
                views[page][off:off + size] = value
            if _kp.ARMED:
                _kp.reached("put_many.written")
            for i, (key, (page, off, size)) in enumerate(zip(new_keys, places)):
                self._publish(key, Slot(page, off, size))
                if _kp.ARMED and i == len(new_keys) // 2:
                    _kp.reached("put_many.half_published")

    def delete(self, key: int) -> None:
        """Remove key; its space is quarantined until the next grace period.

        Works on a corrupt entry too, which is how one is dropped.
        """
        self._check()
        self._check_key(key)
        self._check_not_held(key, "delete")
        entry = self._entries[key]
        if not entry:
            raise MissingKeyError(f"key {key} holds no value")
        if entry & self.layout.init_bit:
            try:
                self._swap(key, lambda e: 0)
            except CorruptStoreError as exc:
                # Odd for longer than any write takes: a writer died inside its write.
                # Dropping the entry is the remedy; a compare-and-swap, so a BPF change
                # that happened meanwhile is not overwritten blindly.
                if exc.entry is None or not self._words.cas(key, exc.entry, 0):
                    raise
        else:
            self._entries[key] = 0
        if _kp.ARMED:
            _kp.reached("delete.done")
        if self._shadow[key]:
            self._forget(key)
