"""The user-space side of a uptr KV store.

A :class:`KVStore` owns the pages of one store: a metadata page and up to
``max_pages`` data pages, mmap'ed in this process and registered as uptrs in
one element of a task storage map (keyed by a pidfd of the task whose BPF
programs use it).  ``get`` and ``put`` of existing keys are plain memory
accesses; a syscall happens only when a data page is added or when the
store waits for a grace period.

Concurrency with BPF programs (no locks; see README "Concurrency"):

- a metadata entry changes with one aligned 32-bit store or compare-and-swap,
  so BPF sees a key before or after a change, never half of one;
- 4- and 8-byte values are single aligned loads and stores; other sizes are
  written under the entry's sequence count and read until a copy is clean;
- space that stops holding a value (delete, shrink, move, a BPF delete) is
  quarantined until a grace period has passed, so a program that read the
  old entry never touches bytes that belong to another key by then;
- a value that moves (resize that cannot stay in place, compact, convert) is
  made unavailable first (BPF gets -EAGAIN), then, after one grace period
  for the whole batch, copied from bytes nobody writes any more and
  published again: a BPF write that returned 0 is never lost.

One thread of the creating process should own a store's calls.  A fork
child's copy of the object refuses every call (:class:`StoreOwnerError`);
after a fork that skipped Python's at-fork hooks, every call that could
reach the kernel map or needs new space still does (a pid check).  The
child's copies of the pages read as zeros (``MADV_WIPEONFORK``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Union

from . import _atomic
from . import _killpoints as _kp
from ._libbpf import LibbpfError
from .allocator import Allocator, Slot, alignment
from .backing import AnonymousBacking, Page
from .errors import (CorruptStoreError, InvalidKeyError, InvalidValueError, KeyHeldError,
                     MissingKeyError, StoreClosedError, StoreFullError, StoreOwnerError, UnsupportedKernelError)
from .grace import grace_period
from .layout import Layout
from .loader import BPF_EXIST, BPF_NOEXIST, BpfMap, BpfObject, MapHandle

BPF_MAP_TYPE_TASK_STORAGE = 29
PIDFD_THREAD = os.O_EXCL
DEFAULT_MAP = "kv_store_map"
_BYTES = (bytes, bytearray)
_from_bytes = int.from_bytes  # a module global: half the cost of looking it up on int per put   # values whose len() is their size in bytes: taken as they are
# How long a write in progress (odd sequence count) may last before the entry counts as corrupt.
SEQ_WAIT_SECONDS = 1.0

# What convert() turns a key into: a new size (prefix kept, growth zeroed),
# a new value, or a function of the old value.
Conversion = Union[int, bytes, bytearray, memoryview, Callable[[bytes], bytes]]

_live_stores: "weakref.WeakSet[KVStore]" = weakref.WeakSet()


@dataclass
class ConvertTimes:
    """Where a convert() spent its time, in seconds (``KVStore.last_convert``)."""

    keys: int = 0              # keys made unavailable
    unavailable: float = 0.0   # first key unavailable -> last key published
    callback: float = 0.0      # while_unavailable()
    grace: float = 0.0         # the one grace period
    publish: float = 0.0       # copy or convert, place, write and publish every key


def _after_fork_in_child() -> None:
    for store in list(_live_stores):
        store._forked = True


os.register_at_fork(after_in_child=_after_fork_in_child)


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


class KVStore:
    """A store in ``kv_map`` for one task (by default the calling thread).

    ``grace`` waits for one RCU grace period (default: :func:`uptrkv.grace.grace_period`);
    ``grace_periods`` counts the waits, so batching can be checked.
    """

    def __init__(self, kv_map: BpfMap | MapHandle, *, pid: int | None = None, tid: int | None = None,
                 pin_path: str | None = None, layout: Layout | None = None,
                 grace: Callable[[], None] | None = None):
        self._setup(kv_map, layout, grace, pid, tid)
        self._backing = AnonymousBacking(self.layout.page_size)
        self.pin_path = pin_path
        registered = False
        try:
            self._map_pages(1)
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
        _live_stores.add(self)

    def _setup(self, kv_map: BpfMap | MapHandle, layout: Layout | None,
               grace: Callable[[], None] | None, pid: int | None, tid: int | None) -> None:
        """Everything but the pages: checks, bookkeeping, a pidfd for the task."""
        self._closed = True
        if kv_map.type != BPF_MAP_TYPE_TASK_STORAGE:
            raise ValueError(f"map {kv_map.name} is not a task storage map")
        self.layout = layout or Layout.from_btf(kv_map.btf, kv_map.source)
        if kv_map.value_size != self.layout.value_size:
            raise ValueError(f"map {kv_map.name} value is {kv_map.value_size} bytes, "
                             f"struct kv_store_value is {self.layout.value_size}")
        lay = self.layout
        self._init_bit, self._seq_one, self._seq_bits = lay.init_bit, lay.seq_one, lay.seq_bits
        self._owner = os.getpid()
        self._forked = False
        self._grace = grace or grace_period
        self.grace_periods = 0
        self.last_convert = ConvertTimes()
        self.map = kv_map.handle()
        self.pin_path = None
        self._pinned = False
        self._wal = None                       # a named store logs in-place writes (NamedStore)
        self._pidfd, self.task = _pidfd(pid, tid)
        self._key = struct.pack("i", self._pidfd)
        self._meta: Page | None = None
        self._pages: list[Page] = []
        self._staged: dict[int, Slot] = {}   # written but not yet published
        # Entries as this store last wrote them, sequence counts masked off.
        self._shadow = [0] * self.layout.max_keys
        self._alloc = Allocator(self.layout.page_size, self.layout.max_pages, 1)
        self._init_fast()
        self._holds: dict[int, tuple[object, dict[int, Slot]]] = {}   # id(owner) -> (owner, slots)

    def _map_pages(self, data_pages: int) -> None:
        """Map the metadata page and the first data_pages data pages from the backing."""
        self._meta = self._backing.meta()
        self._entries = self._meta.u32
        self._words = _atomic.Words32(self._meta.address, self._meta.u64)
        for i in range(data_pages):
            self._pages.append(self._backing.data(i))

    @classmethod
    def create(cls, obj: BpfObject, map_name: str = DEFAULT_MAP, **kwargs) -> "KVStore":
        """Store in a loaded object's task storage map."""
        return cls(obj.map(map_name), **kwargs)

    # --- registration --------------------------------------------------------

    def _value(self, pages: list[Page]) -> bytes:
        buf = bytearray(self.layout.value_size)
        struct.pack_into("Q", buf, self.layout.meta_field, self._meta.address)
        for i, page in enumerate(pages):
            struct.pack_into("Q", buf, self.layout.page_fields[i], page.address)
        return bytes(buf)

    def _check_owner(self) -> None:
        """StoreOwnerError in a fork child, even one whose fork skipped Python's at-fork hooks
        (os.getpid() is a syscall: only on paths that reach the kernel map)."""
        if self._forked or os.getpid() != self._owner:
            self._forked = True
            raise StoreOwnerError(
                f"this store belongs to process {self._owner}; this process ({os.getpid()}, a fork "
                "child) may not use it: its copies of the pages are wiped; create a store of its own")

    def _register(self, flags: int, pages: list[Page] | None = None) -> None:
        self._check_owner()
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
        self._check_owner()
        if len(self._pages) >= self.layout.max_pages:
            raise StoreFullError(f"all {self.layout.max_pages} data pages are in use")
        page = self._backing.data(len(self._pages))
        try:
            if _kp.ARMED:
                _kp.reached("add_page.mapped")
            self._register(BPF_EXIST, self._pages + [page])
            if _kp.ARMED:
                _kp.reached("add_page.registered")

        except BaseException:
            page.close()
            self._backing.drop(len(self._pages))
            raise
        self._pages.append(page)

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
        deadline = time.monotonic() + SEQ_WAIT_SECONDS
        while entry & self._seq_one and entry & self._init_bit:
            if time.monotonic() > deadline:
                raise self._corrupt(key, entry, f"has stayed odd (a write in progress) for "
                                    f"{SEQ_WAIT_SECONDS} s")
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
                deadline = time.monotonic() + SEQ_WAIT_SECONDS
            elif time.monotonic() > deadline:
                raise CorruptStoreError(
                    f"key {key}: the value changed during every copy for {SEQ_WAIT_SECONDS} s "
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

    # --- holds: keys a loaded program resolved (known keys) ----------------------

    def hold(self, keys, owner: object) -> dict[int, Slot]:
        """Keep keys where they are until release(owner); return their slots.

        A program that resolved a key's place at load (uptrkv.known_keys)
        reads and writes it there for as long as it is loaded: while held, a
        key cannot be deleted, resized or converted (KeyHeldError), compact()
        leaves it in place, and space freed under it (a BPF delete) stays
        quarantined until the last hold goes.  keys is an iterable of keys
        (held where they are now) or a mapping key -> Slot (a rollout holds
        the place it reserved for a key's next value).
        """
        self._check()
        if hasattr(keys, "items"):
            slots = dict(keys.items())
        else:
            slots = {k: self._require(k) for k in keys}
        _, held = self._holds.setdefault(id(owner), (owner, {}))
        held.update(slots)
        return dict(slots)

    def release(self, owner: object) -> dict[int, Slot]:
        """Drop owner's holds; returns them (empty for an owner that holds nothing).

        Quarantined space that only this hold kept is freed after one grace
        period, waited for here: the owner's programs may still be running.
        """
        entry = self._holds.pop(id(owner), None)
        if entry is None:
            return {}
        if not self._closed and not self._forked:
            quarantined = set(self._alloc.quarantined)
            if any(s in quarantined and s not in self._held_slots() for s in entry[1].values()):
                self._wait_grace()
        return entry[1]

    def holders(self, key: int) -> list[object]:
        """The owners holding key."""
        return [owner for owner, slots in self._holds.values() if key in slots]

    def _held_slots(self) -> set[Slot]:
        return {s for _, slots in self._holds.values() for s in slots.values()}

    def _check_not_held(self, key: int, action: str) -> None:
        holders = self.holders(key)
        if holders:
            who = getattr(holders[0], "path", None) or repr(holders[0])
            raise KeyHeldError(
                f"cannot {action} key {key}: {who} resolved its place when it was loaded (a known key) "
                f"and uses it there; roll out a version that does not need it "
                f"(uptrkv.rollout.rollout) or close that object first")

    def _held_place(self, key: int, size: int) -> Slot | None:
        """Where a new value of key must go because a loaded program resolved its place
        (a known key BPF deleted): that place, still quarantined for the holder.  None if
        nobody holds key; KeyHeldError if the value cannot go there.  Changes nothing."""
        places = {slots[key] for _, slots in self._holds.values() if key in slots}
        if not places:
            return None
        slot = next(iter(places))
        free = slot in self._alloc.quarantined or slot == self.layout.decode(self._shadow[key])
        if len(places) > 1 or slot.size != size or not free or key in self._staged:
            who = ", ".join(sorted({str(getattr(o, "path", None) or repr(o)) for o in self.holders(key)}))
            raise KeyHeldError(
                f"cannot put key {key} anew: {who} resolved its place when loaded (a known key) and "
                f"uses it there ({sorted(places)}); a {size}-byte value can go only to one free "
                "held place of its size")
        return slot

    def reserve_place(self, size: int) -> Slot:
        """Fresh space no entry names, for a place a program must learn before load
        (a rollout's known key that changes size).  Hand it to convert(places=), or
        give it back with retire_place()."""
        self._check()
        self._check_size(size, "reserved size")
        self._sync()
        return self._place(size)

    def retire_place(self, slot: Slot) -> None:
        """Give back a reserve_place() slot that was never published (quarantined:
        a program that learned it may still run)."""
        if not self._closed and not self._forked:
            self._alloc.retire(slot)

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
        self._journal("marked", {key: None if callable(conv) else conv for key, conv in changes.items()})
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

    def ensure_pages(self, pages: int) -> None:
        """Register data pages up to ``pages`` now (a later step then needs no syscall)."""
        self._check()
        self._check_owner()
        while len(self._pages) < pages:
            self._add_page()

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

    def _journal(self, phase: str | None, keys: Mapping | None = None) -> None:
        """Record a move in progress where a later process finds it (NamedStore); here nothing.

        "marked": keys about to become unavailable, each with its conversion
        (a size, new bytes, or None for a function); "placed": each key's new
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

    # --- staging: write now, publish later -----------------------------------------

    def stage(self, key: int, value) -> Slot:
        """Write value into fresh space for key without publishing it.

        BPF keeps seeing key's current entry (or none) until publish_staged();
        discard_staged() frees the space again.
        """
        self._check()
        self._check_key(key)
        value = as_bytes(value, f"value for key {key}")
        self._check_size(len(value), f"value for key {key}")
        if key in self._staged:
            raise InvalidValueError(f"key {key} already has a staged value")
        slot = self._place(len(value))
        self._pages[slot.page].view[slot.offset:slot.end] = value
        if _kp.ARMED:
            _kp.reached("stage.written")
        self._staged[key] = slot
        return slot

    def publish_staged(self) -> list[int]:
        """Publish every staged value: one entry store per key, O(staged keys).

        A key's previous value is replaced (its space quarantined); a BPF
        write to it that raced with the switch lands in the old bytes.
        """
        self._check()
        for key in sorted(self._staged):
            self._check_not_held(key, "publish a staged value for")
        done = []
        for key, slot in sorted(self._staged.items()):
            entry = self.layout.encode(slot)
            if self._entries[key] & self.layout.init_bit:
                self._swap(key, lambda e: entry)
            else:
                self._entries[key] = entry
            if self._shadow[key]:
                self._forget(key)
            self._shadow[key] = entry
            done.append(key)
        self._staged.clear()
        return done

    def discard_staged(self, key: int | None = None) -> None:
        """Drop a staged value (all of them without key); BPF never saw it."""
        for k in ([key] if key is not None else list(self._staged)):
            slot = self._staged.pop(k, None)
            if slot is not None:
                self._alloc.release(slot)

    def staged(self) -> list[int]:
        return sorted(self._staged)

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

    # --- inspection ------------------------------------------------------------------

    def verify(self) -> list[str]:
        """Every inconsistency of the metadata page, one sentence each (empty: consistent)."""
        self._check()
        lay = self.layout
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

    @property
    def pages(self) -> int:
        """Data pages registered now."""
        return len(self._pages)

    def free_bytes(self) -> int:
        """Bytes new values can take now, in all pages a store may have (quarantine excluded)."""
        self._check()
        return self._sync().free_bytes(self.layout.max_pages)

    def quarantined_bytes(self) -> int:
        """Bytes waiting for a grace period before reuse."""
        self._check()
        return self._sync().quarantined_bytes

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def owner(self) -> int:
        """pid of the process that created the store."""
        return self._owner

    def close(self) -> None:
        """Remove the store from the map (the kernel unpins every page) and unmap all pages.

        In a fork child this only drops the child's own copies (fds, wiped
        pages) and raises StoreOwnerError: the parent's store stays.
        """
        if self._closed:
            return
        self._closed = True
        if self._forked or os.getpid() != self._owner:
            self._forked = True
            self._release()
            raise StoreOwnerError(
                f"this store belongs to process {self._owner}; process {os.getpid()} (a fork child) "
                "cannot close it: the child's copies were released, the owner's store is unchanged")
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
            self._entries = None
        for page in getattr(self, "_pages", []):
            page.close()
        self._pages = []
        if getattr(self, "_meta", None) is not None:
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
