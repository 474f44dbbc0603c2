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

This module holds what makes a store exist: creating it, registering its
pages in the element, closing it.  The rest of the class comes from one
module per concept in :mod:`uptrkv._store` (entries and allocation sync,
values, holds, moves, staging); :mod:`uptrkv.named_store` adds stores that
outlive their process.

One thread of the creating process should own a store's calls.  A fork
child's copy of the object refuses every call (:class:`StoreOwnerError`);
after a fork that skipped Python's at-fork hooks, every call that could
reach the kernel map or needs new space still does (a pid check).  The
child's copies of the pages read as zeros (``MADV_WIPEONFORK``).
"""

from __future__ import annotations

import errno
import os
import struct
import threading
import weakref
from typing import Callable

from . import _atomic
from . import _killpoints as _kp
from ._libbpf import LibbpfError
from ._store.entries import EntriesMixin
from ._store.holds import HoldsMixin
from ._store.moves import Conversion, ConvertTimes, MovesMixin  # noqa: F401 - part of the API
from ._store.staging import StagingMixin
from ._store.values import ValuesMixin, as_bytes  # noqa: F401 - part of the API
from .allocator import Allocator, Slot
from .backing import AnonymousBacking, Page
from .errors import InvalidValueError, StoreFullError, StoreOwnerError, UnsupportedKernelError
from .grace import grace_period
from .layout import Layout
from .loader import BPF_EXIST, BPF_NOEXIST, BpfMap, BpfObject, MapHandle

BPF_MAP_TYPE_TASK_STORAGE = 29
PIDFD_THREAD = os.O_EXCL
DEFAULT_MAP = "kv_store_map"
_live_stores: "weakref.WeakSet[KVStore]" = weakref.WeakSet()


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


class KVStore(EntriesMixin, ValuesMixin, HoldsMixin, MovesMixin, StagingMixin):
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

    def ensure_pages(self, pages: int) -> None:
        """Register data pages up to ``pages`` now (a later step then needs no syscall)."""
        self._check()
        self._check_owner()
        while len(self._pages) < pages:
            self._add_page()

    @property
    def pages(self) -> int:
        """Data pages registered now."""
        return len(self._pages)

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

