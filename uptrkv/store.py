"""The user-space side of a uptr KV store.

A :class:`KVStore` owns the pages of one store: a metadata page and up to
``max_pages`` data pages, mmap'ed in this process and registered as uptrs in
one element of a task storage map (keyed by a pidfd of the task whose BPF
programs use it).  ``get`` and ``put`` of existing keys are plain memory
accesses; a syscall happens only when a data page is added.

Concurrency: user space and BPF share the pages without locks.  A metadata
entry is one aligned 32-bit store, so BPF sees a key either before or after
a put/resize/delete, never half of one; the bytes of a value larger than 8
are not copied atomically.  Space freed by a delete or a move is reused only
by a later allocation of this store.  One thread of this process should
own a store's writes.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct
import threading

from ._libbpf import LibbpfError
from .allocator import Allocator, Slot
from .errors import (InvalidKeyError, InvalidValueError, KeyHeldError, MissingKeyError,
                     StoreClosedError, StoreFullError, UnsupportedKernelError)
from .layout import Layout
from .loader import BPF_EXIST, BPF_NOEXIST, BpfMap, BpfObject

BPF_MAP_TYPE_TASK_STORAGE = 29
PIDFD_THREAD = os.O_EXCL
DEFAULT_MAP = "kv_store_map"
_BYTES = (bytes, bytearray)   # values whose len() is their size in bytes: taken as they are


class _Page:
    """One anonymous, page-aligned mapping, its address, and typed views of it."""

    def __init__(self, size: int):
        self.mm = mmap.mmap(-1, size, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        anchor = ctypes.c_char.from_buffer(self.mm)
        self.address = ctypes.addressof(anchor)
        del anchor
        self.view = memoryview(self.mm)
        self.u64 = self.view.cast("Q")     # aligned 8-byte values by offset // 8
        self.u32 = self.view.cast("I")     # aligned 4-byte values by offset // 4

    def close(self) -> None:
        self.u64.release()
        self.u32.release()
        self.view.release()
        self.mm.close()


def _pidfd(pid: int | None, tid: int | None) -> tuple[int, str]:
    if pid is not None and tid is not None:
        raise ValueError("give pid or tid, not both")
    if tid is None and pid is None:
        tid = threading.get_native_id()
        if tid == os.getpid():
            tid, pid = None, tid
    try:
        if tid is not None:
            return os.pidfd_open(tid, PIDFD_THREAD), f"thread {tid}"
        return os.pidfd_open(pid), f"process {pid}"
    except OSError as exc:
        who = f"thread {tid}" if tid is not None else f"process {pid}"
        if exc.errno == errno.EINVAL and tid is not None:
            raise UnsupportedKernelError(
                f"pidfd_open({tid}, PIDFD_THREAD) failed: a store for a thread needs Linux >= 6.9") from None
        raise OSError(exc.errno, f"cannot open a pidfd for {who}: {exc.strerror}") from None


class KVStore:
    """A store in ``kv_map`` for one task (by default the calling thread)."""

    def __init__(self, kv_map: BpfMap, *, pid: int | None = None, tid: int | None = None,
                 pin_path: str | None = None, layout: Layout | None = None):
        if kv_map.type != BPF_MAP_TYPE_TASK_STORAGE:
            raise ValueError(f"map {kv_map.name} is not a task storage map")
        self.layout = layout or Layout.from_btf(kv_map.btf, kv_map.source)
        if kv_map.value_size != self.layout.value_size:
            raise ValueError(f"map {kv_map.name} value is {kv_map.value_size} bytes, "
                             f"struct kv_store_value is {self.layout.value_size}")
        self.map = kv_map.handle()
        self.pin_path = pin_path
        self._pinned = False
        self._closed = True
        self._pidfd, self.task = _pidfd(pid, tid)
        self._key = struct.pack("i", self._pidfd)
        self._meta: _Page | None = None
        self._pages: list[_Page] = []
        self._staged: dict[int, Slot] = {}   # written but not yet published
        self._shadow = [0] * self.layout.max_keys  # entries as this store last wrote them
        self._alloc = Allocator(self.layout.page_size, self.layout.max_pages, 1)
        self._init_fast()
        self._holds: dict[int, tuple[object, dict[int, Slot]]] = {}   # id(owner) -> (owner, slots)
        self._deferred: set[Slot] = set()   # freed while held: released with the last hold
        registered = False
        try:
            self._meta = _Page(self.layout.page_size)
            self._entries = self._meta.view.cast("I")
            self._pages.append(_Page(self.layout.page_size))
            self._register(BPF_NOEXIST)
            registered = True
            if pin_path:
                self.map.pin(pin_path)
                self._pinned = True
            self._closed = False
        except BaseException:
            if registered:
                self.map.delete(self._key)      # unpins the pages before we unmap them
            self._release()
            raise

    @classmethod
    def create(cls, obj: BpfObject, map_name: str = DEFAULT_MAP, **kwargs) -> "KVStore":
        """Store in a loaded object's task storage map."""
        return cls(obj.map(map_name), **kwargs)

    # --- registration --------------------------------------------------------

    def _value(self, pages: list[_Page]) -> bytes:
        buf = bytearray(self.layout.value_size)
        struct.pack_into("Q", buf, self.layout.meta_field, self._meta.address)
        for i, page in enumerate(pages):
            struct.pack_into("Q", buf, self.layout.page_fields[i], page.address)
        return bytes(buf)

    def _register(self, flags: int, pages: list[_Page] | None = None) -> None:
        try:
            self.map.update(self._key, self._value(self._pages if pages is None else pages), flags)
        except LibbpfError as exc:
            if exc.errno == errno.EEXIST:
                raise InvalidValueError(
                    f"{self.task} already has a store in map {self.map.name}; "
                    "close that store first") from None
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.E2BIG):
                raise UnsupportedKernelError(
                    f"registering uptr pages in {self.map.name} failed ({exc.strerror}): "
                    "the kernel needs uptr support in task storage (Linux >= 6.13)") from None
            if exc.errno == errno.ESRCH:
                raise OSError(errno.ESRCH, f"{self.task} has exited") from None
            raise

    def _add_page(self) -> None:
        if len(self._pages) >= self.layout.max_pages:
            raise StoreFullError(f"all {self.layout.max_pages} data pages are in use")
        page = _Page(self.layout.page_size)
        try:
            self._register(BPF_EXIST, self._pages + [page])
        except BaseException:
            page.close()
            raise
        self._pages.append(page)

    # --- helpers ---------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise StoreClosedError("the store is closed")

    def _check_key(self, key: int) -> None:
        if not isinstance(key, int) or not 0 <= key < self.layout.max_keys:
            raise InvalidKeyError(f"key {key!r} is outside 0..{self.layout.max_keys - 1}")

    def _check_size(self, size: int, what: str) -> None:
        if not 1 <= size <= self.layout.max_value_size:
            raise InvalidValueError(f"{what} is {size} bytes; values are 1..{self.layout.max_value_size} bytes")

    def _slot(self, key: int) -> Slot | None:
        return self.layout.decode(self._entries[key])

    def _require(self, key: int) -> Slot:
        self._check()
        self._check_key(key)
        slot = self._slot(key)
        if slot is None:
            raise MissingKeyError(f"key {key} holds no value")
        return slot

    def _sync(self) -> Allocator:
        """The placement, updated for entries changed behind our back (BPF deletes)."""
        now = self._entries.tolist()
        if now != self._shadow:
            try:
                for was, is_ in zip(self._shadow, now):
                    if was != is_:
                        if (old := self.layout.decode(was)) is not None:
                            self._free(old)
                        if (new := self.layout.decode(is_)) is not None:
                            self._alloc.reserve(new)
            except ValueError:   # entries written by someone else: start over from the page
                live = [s for s in map(self.layout.decode, now) if s]
                held = {s for _, slots in self._holds.values() for s in slots.values()} - set(live)
                self._alloc = Allocator.from_slots(live + list(self._staged.values()) + list(held),
                                                   self.layout.page_size, self.layout.max_pages,
                                                   len(self._pages))
            self._shadow = now
        return self._alloc

    def allocator(self) -> Allocator:
        """A copy of the current placement (changing it changes nothing here)."""
        self._check()
        return self._sync().copy()

    def _place(self, size: int) -> Slot:
        """Reserve room, adding data pages if needed; StoreFullError changes nothing."""
        alloc = self._sync()
        slot = alloc.find(size)
        while slot.page >= len(self._pages):
            self._add_page()
        alloc.reserve(slot)
        return slot

    def _set_entry(self, key: int, slot: Slot | None, release_old: bool = True) -> None:
        """Publish key's entry (one 32-bit store); slot is already reserved."""
        old = self.layout.decode(self._shadow[key])
        entry = 0 if slot is None else self.layout.encode(slot)
        self._entries[key] = entry
        self._shadow[key] = entry
        if release_old and old is not None:
            self._free(old)

    # --- public API ------------------------------------------------------------

    # --- fast paths ---------------------------------------------------------
    #
    # get/put and the typed accessors compare the key's entry with the one
    # they last decoded for it (one list index, one load from the metadata
    # page) and then touch the page directly: no decode, no Slot, no method
    # call.  Anything else (closed store, bad key or value, a key without a
    # value, an entry that changed) takes the checked path, which refreshes
    # the key's cache line.  Pages going away (compact, close) clear it.

    def _init_fast(self) -> None:
        # key -> (entry, page mmap, slice, size, page, offset // 8, offset // 4)
        self._fast: list[tuple | None] = [None] * self.layout.max_keys

    def _remember(self, key: int, slot: Slot) -> None:
        page = self._pages[slot.page]
        self._fast[key] = (self._entries[key], page.mm, slice(slot.offset, slot.end), slot.size,
                           page, slot.offset >> 3, slot.offset >> 2)

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

    def get(self, key: int) -> bytes:
        """key's value (a copy)."""
        if key.__class__ is int and key >= 0:
            try:
                hit = self._fast[key]
                if hit[0] == self._entries[key]:
                    return hit[1][hit[2]]
            except (IndexError, TypeError):
                pass
        return self._get_checked(key)

    def put(self, key: int, value: bytes) -> None:
        """Set key's value; a new key gets space, an existing key keeps its size."""
        if key.__class__ is int and key >= 0 and value.__class__ in _BYTES:
            try:
                hit = self._fast[key]
                if hit[0] == self._entries[key] and len(value) == hit[3]:
                    hit[1][hit[2]] = value
                    return
            except (IndexError, TypeError):
                pass
        self._put_checked(key, value)

    def get_u64(self, key: int) -> int:
        """An 8-byte value as an unsigned little-endian integer."""
        hit = self._hit(key)
        if hit is not None and hit[3] == 8:
            return hit[4].u64[hit[5]]
        return int.from_bytes(self._sized(key, 8, "get_u64"), "little")

    def put_u64(self, key: int, value: int) -> None:
        """Store an unsigned integer in an existing 8-byte key (one aligned store)."""
        hit = self._hit(key)
        if hit is not None and hit[3] == 8 and value.__class__ is int and 0 <= value < 1 << 64:
            hit[4].u64[hit[5]] = value
            return
        self._put_int(key, value, 8, "put_u64")

    def get_u32(self, key: int) -> int:
        """A 4-byte value as an unsigned little-endian integer."""
        hit = self._hit(key)
        if hit is not None and hit[3] == 4:
            return hit[4].u32[hit[6]]
        return int.from_bytes(self._sized(key, 4, "get_u32"), "little")

    def put_u32(self, key: int, value: int) -> None:
        """Store an unsigned integer in an existing 4-byte key (one aligned store)."""
        hit = self._hit(key)
        if hit is not None and hit[3] == 4 and value.__class__ is int and 0 <= value < 1 << 32:
            hit[4].u32[hit[6]] = value
            return
        self._put_int(key, value, 4, "put_u32")

    def get_into(self, key: int, buffer) -> int:
        """Copy key's value into the start of a writable buffer; return its size."""
        hit = self._hit(key)
        if hit is None:
            self._remember(key, self._require(key))
            hit = self._fast[key]
        size = hit[3]
        if buffer.__class__ is bytearray and size <= 64:   # small: a bytes copy is cheaper than views
            if len(buffer) < size:
                raise InvalidValueError(f"key {key} holds {size} bytes, the buffer has {len(buffer)}")
            buffer[:size] = hit[1][hit[2]]
            return size
        src = hit[4].view[hit[2]]
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
        dst[:size] = src
        return size

    def _sized(self, key: int, size: int, what: str) -> bytes:
        slot = self._require(key)
        if slot.size != size:
            raise InvalidValueError(f"key {key} holds {slot.size} bytes; {what} needs {size}")
        self._remember(key, slot)
        return bytes(self._pages[slot.page].view[slot.offset:slot.end])

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
        self._remember(key, slot)
        return bytes(self._pages[slot.page].view[slot.offset:slot.end])

    def _put_checked(self, key: int, value: bytes) -> None:
        self._check()
        self._check_key(key)
        value = bytes(value)
        self._check_size(len(value), f"value for key {key}")
        slot = self._slot(key)
        if slot is not None:
            if slot.size != len(value):
                raise InvalidValueError(
                    f"key {key} holds {slot.size} bytes, got {len(value)}; resize({key}, {len(value)}) first")
            self._pages[slot.page].view[slot.offset:slot.end] = value
            return
        slot = self._place(len(value))
        self._pages[slot.page].view[slot.offset:slot.end] = value
        self._set_entry(key, slot)

    def put_many(self, items) -> None:
        """Put many keys at once: one placement pass and one page registration.

        items is a mapping or (key, value) pairs.  Existing keys keep their
        size.  Everything is checked and placed before anything is written:
        on an error (bad key or value, StoreFullError) the store is unchanged.
        New keys are published after their bytes are written.
        """
        self._check()
        pairs = list(items.items() if hasattr(items, "items") else items)
        lay = self.layout
        seen: set[int] = set()
        updates, new_keys, new_values = [], [], []
        for key, value in pairs:
            if key.__class__ is not int:
                if isinstance(key, bool) or not isinstance(key, int):
                    raise TypeError(f"keys are int, got {type(key).__name__} {key!r}")
            self._check_key(key)
            if key in seen:
                raise InvalidValueError(f"key {key} appears twice in put_many")
            seen.add(key)
            if value.__class__ not in _BYTES:
                if isinstance(value, (str, int)):
                    raise TypeError(f"value for key {key} must be bytes-like, got {type(value).__name__}")
                try:
                    value = memoryview(value).cast("B")
                except TypeError:
                    raise TypeError(f"value for key {key} must be bytes-like, "
                                    f"got {type(value).__name__}") from None
            size = len(value)
            self._check_size(size, f"value for key {key}")
            slot = self._slot(key)
            if slot is not None:
                if slot.size != size:
                    raise InvalidValueError(
                        f"key {key} holds {slot.size} bytes, got {size}; resize({key}, {size}) first")
                updates.append((slot, value))
            else:
                new_keys.append(key)
                new_values.append(value)
        if new_keys:
            trial = self._sync().copy()
            places = trial.place_many([len(v) for v in new_values])    # StoreFullError: no change
            need = max(p for p, _, _ in places) + 1
            if need > len(self._pages):
                added = [_Page(lay.page_size) for _ in range(need - len(self._pages))]
                try:
                    self._register(BPF_EXIST, self._pages + added)
                except BaseException:
                    for page in added:
                        page.close()
                    raise
                self._pages.extend(added)
            self._alloc = trial
        for slot, value in updates:
            self._pages[slot.page].view[slot.offset:slot.end] = value
        if new_keys:
            views = [p.view for p in self._pages]
            base = lay.init_bit
            for (page, off, size), value in zip(places, new_values):
                views[page][off:off + size] = value
            entries, shadow = self._entries, self._shadow
            for key, (page, off, size) in zip(new_keys, places):
                entry = (base | page << lay.page_shift | (size - 1) << lay.size_shift
                         | off << lay.off_shift)
                entries[key] = entry
                shadow[key] = entry

    # --- holds: keys a loaded program resolved (known keys) ----------------------

    def hold(self, keys, owner: object) -> dict[int, Slot]:
        """Keep keys where they are until release(owner); return their slots.

        A program that resolved a key's place at load (uptrkv.known_keys)
        reads and writes it there for as long as it is loaded: while held, a
        key cannot be deleted or resized (KeyHeldError), compact() leaves it
        in place, and space freed under it (a BPF delete, a rollout's move)
        is not reused before the last hold goes.  keys is an iterable of
        keys (held where they are now) or a mapping key -> Slot (a rollout
        holds a staged place).
        """
        self._check()
        if hasattr(keys, "items"):
            slots = dict(keys.items())
        else:
            slots = {k: self._require(k) for k in keys}
        _, held = self._holds.setdefault(id(owner), (owner, {}))
        held.update(slots)
        return dict(slots)

    def release(self, owner: object) -> None:
        """Drop owner's holds (a no-op for an owner that holds nothing)."""
        entry = self._holds.pop(id(owner), None)
        if entry is None or not self._deferred:
            return
        still = {s for _, slots in self._holds.values() for s in slots.values()}
        for slot in [s for s in entry[1].values() if s in self._deferred and s not in still]:
            self._deferred.discard(slot)
            if not self._closed:
                self._alloc.release(slot)

    def holders(self, key: int) -> list[object]:
        """The owners holding key."""
        return [owner for owner, slots in self._holds.values() if key in slots]

    def _check_not_held(self, key: int, action: str) -> None:
        holders = self.holders(key)
        if holders:
            who = getattr(holders[0], "path", None) or repr(holders[0])
            raise KeyHeldError(
                f"cannot {action} key {key}: {who} resolved its place when it was loaded (a known key) "
                f"and uses it there; roll out a version that does not need it "
                f"(uptrkv.rollout.rollout) or close that object first")

    def _free(self, slot: Slot) -> None:
        """Release a slot no entry names any more, unless a hold still uses it."""
        if any(slot in slots.values() for _, slots in self._holds.values()):
            self._deferred.add(slot)
        else:
            self._alloc.release(slot)

    def delete(self, key: int) -> None:
        self._require(key)
        self._check_not_held(key, "delete")
        self._sync()
        self._set_entry(key, None)

    def resize(self, key: int, size: int) -> Slot:
        """Change key's size keeping its common prefix (new bytes are zero)."""
        old = self._require(key)
        self._check_size(size, f"new size of key {key}")
        if size == old.size:
            return old
        self._check_not_held(key, "resize")
        alloc = self._sync()
        keep = min(old.size, size)
        if alloc.can_resize_in_place(old, size):
            new = Slot(old.page, old.offset, size)
            alloc.release(old)
            alloc.reserve(new)
            if size > keep:
                self._pages[new.page].view[new.offset + keep:new.end] = bytes(size - keep)
            self._set_entry(key, new, release_old=False)
            return new
        # Moving: the old bytes stay reserved, BPF may read them until the entry flips.
        new = self._place(size)
        dst = self._pages[new.page].view
        dst[new.offset:new.offset + keep] = self._pages[old.page].view[old.offset:old.offset + keep]
        if size > keep:
            dst[new.offset + keep:new.end] = bytes(size - keep)
        self._set_entry(key, new)
        return new

    # --- staging: write now, publish later (used by rollout) ---------------------

    def stage(self, key: int, value: bytes) -> Slot:
        """Write value into fresh space for key without publishing it.

        BPF keeps seeing key's current entry (or none) until publish_staged();
        discard_staged() frees the space again.
        """
        self._check()
        self._check_key(key)
        value = bytes(value)
        self._check_size(len(value), f"value for key {key}")
        if key in self._staged:
            raise InvalidValueError(f"key {key} already has a staged value")
        slot = self._place(len(value))
        self._pages[slot.page].view[slot.offset:slot.end] = value
        self._staged[key] = slot
        return slot

    def publish_staged(self, key: int) -> None:
        self._check()
        self._sync()
        self._set_entry(key, self._staged.pop(key))

    def discard_staged(self, key: int) -> None:
        slot = self._staged.pop(key, None)
        if slot is not None:
            self._alloc.release(slot)

    def compact(self) -> int:
        """Move values down to the lowest free offsets and release empty trailing pages.

        Each move copies the value into free space that does not overlap it,
        then flips its metadata entry with one 32-bit store, so a BPF reader
        always sees a whole value.  A BPF write to a value while it moves
        (between the copy and the flip) is lost: run compact() while no
        attached program writes to the store, for example before attaching
        or after detaching.  Held keys (see hold()) stay where they are.
        Returns the number of bytes moved.
        """
        self._check()
        if self._staged:
            raise InvalidValueError("cannot compact while values are staged")
        alloc = self._sync()
        moved = 0
        held = {k for _, slots in self._holds.values() for k in slots}
        for old, key in sorted((self._slot(k), k) for k in self.keys() if k not in held):
            alloc.release(old)
            new = alloc.find(old.size)
            if (new.page, new.offset) < (old.page, old.offset) and \
                    (new.page != old.page or new.end <= old.offset):
                self._pages[new.page].view[new.offset:new.end] = \
                    self._pages[old.page].view[old.offset:old.end]
                alloc.reserve(new)
                self._set_entry(key, new, release_old=False)
                moved += old.size
            else:
                alloc.reserve(old)
        used_pages = max((s.page + 1 for s in alloc.slots()), default=1)
        if used_pages < len(self._pages):
            self._register(BPF_EXIST, self._pages[:used_pages])
            self._init_fast()
            for page in self._pages[used_pages:]:
                page.close()
            del self._pages[used_pages:]
            alloc.pages = used_pages
        return moved

    def slot(self, key: int) -> Slot:
        """Where key's value lives."""
        return self._require(key)

    def size(self, key: int) -> int:
        return self._require(key).size

    def keys(self) -> list[int]:
        self._check()
        bit = self.layout.init_bit
        return [k for k, e in enumerate(self._entries) if e & bit]

    def items(self) -> list[tuple[int, bytes]]:
        return [(k, self.get(k)) for k in self.keys()]

    def __contains__(self, key: int) -> bool:
        self._check()
        return isinstance(key, int) and 0 <= key < self.layout.max_keys and self._slot(key) is not None

    def __len__(self) -> int:
        return len(self.keys())

    @property
    def pages(self) -> int:
        """Data pages registered now."""
        return len(self._pages)

    def free_bytes(self) -> int:
        self._check()
        return self._sync().free_bytes(self.layout.max_pages)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Remove the store from the map (the kernel unpins every page) and unmap all pages."""
        if self._closed:
            return
        self._closed = True
        try:
            try:
                self.map.delete(self._key)
            except LibbpfError as exc:
                if exc.errno not in (errno.ENOENT, errno.ESRCH, errno.EBADF):
                    raise
            if self._pinned:
                os.unlink(self.pin_path)
                self._pinned = False
        finally:
            self._release()

    def _release(self) -> None:
        if getattr(self, "_fast", None) is not None:
            self._init_fast()
        if getattr(self, "_entries", None) is not None:
            self._entries.release()
            self._entries = None
        for page in self._pages:
            page.close()
        self._pages = []
        if self._meta is not None:
            self._meta.close()
            self._meta = None
        if getattr(self, "_pidfd", -1) >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        if getattr(self, "map", None) is not None:
            self.map.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
