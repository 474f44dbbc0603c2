"""A store that outlives its process: pages in tmpfs files, found by name.

:class:`NamedStore` is a :class:`~uptrkv.store.KVStore` whose pages are the
files of a store directory (:mod:`.named`, :mod:`.backing`).  ``create()``
writes the state file, then registers the pages; ``open()`` from any process
maps the same files, checks them against the state, the pinned map and the
target task, becomes the one writer (flock) and repairs what a writer killed
at any point left behind:

- space: the allocation is derived from the metadata page, never stored, so
  staged or half-placed values are free again; all free space waits out one
  grace period before reuse (the dead writer may have freed it a moment
  before, while a BPF program still used it);
- in-place writes of values that are not 4 or 8 bytes: the writer logs the
  new bytes first (``wal``), so a copy cut short is redone;
- moves (convert, compact, rollout): rolled forward from the journal in the
  state file (conversions by size or by value; a conversion by a Python
  function cannot be redone, so those keys get their old value back).

``close()`` unmaps and unlocks; the element, the pages and the files stay.
``destroy()`` deletes the element, the links pinned for the store and the files.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import struct
import threading
import time
from dataclasses import asdict
from typing import Callable, Mapping

from . import _killpoints as _kp
from ._libbpf import LibbpfError
from .allocator import Allocator, Slot
from .backing import FileBacking
from .errors import (CorruptStoreError, InvalidValueError, MapGoneError, StoreBusyError,
                     StoreFullError, StoreStateError, TargetGoneError)
from .layout import Layout
from .loader import BPF_EXIST, BPF_NOEXIST, BpfMap, BpfObject, MapHandle
from .named import NEW_PIN, StoreDir, Target, list_names, pin_in_use, root_lock, task_start_time
from .store import DEFAULT_MAP, KVStore, _live_stores

BPFFS_ENV = "UPTRKV_BPFFS"
DEFAULT_BPFFS = "/sys/fs/bpf/uptrkv"
WAL = "wal"
# A sequence count that stays odd this long at open is a dead writer's (BPF holds it for ns).
STUCK_ODD_SECONDS = 0.05
# How long a reader waits for a key the writer is moving (a move lasts about a grace period).
READER_WAIT_SECONDS = 2.0
WAL_SIZE = 2 * 4096
_WAL_HEAD = struct.Struct("<III")        # key + 1 (0: no record), entry location, size


def bpffs_root(pin_root: str | os.PathLike | None = None) -> str:
    return os.fspath(pin_root) if pin_root is not None else os.environ.get(BPFFS_ENV, DEFAULT_BPFFS)


def _drop_locks_in_child() -> None:
    """A fork child shares its parent's lock (one open file description): close its copy,
    so that the lock goes when the parent closes the store, not when the child exits.
    Its copy of the object shares the pages too (MAP_SHARED): forget the fast paths'
    cache so that every call takes the checked path, which refuses (StoreOwnerError)."""
    for store in list(_live_stores):
        d = getattr(store, "_dir", None)
        if d is not None and d.locked:
            d.unlock()
        if d is not None and getattr(store, "_fast", None) is not None:
            store._init_fast()


os.register_at_fork(after_in_child=_drop_locks_in_child)


class WriteLog:
    """A redo record of the one in-place write in progress.

    begin() stores the value, then the header last; end() clears the
    header.  A header found at open names a write that may be cut short:
    it is done again (a put that never returned then took effect).
    """

    def __init__(self, path: str, create: bool):
        flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_CREAT if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if os.fstat(fd).st_size != WAL_SIZE:
                os.ftruncate(fd, WAL_SIZE)
            self.mm = mmap.mmap(fd, WAL_SIZE, flags=mmap.MAP_SHARED)
        finally:
            os.close(fd)
        self.head = memoryview(self.mm)[:_WAL_HEAD.size].cast("I")

    def begin(self, key: int, location: int, data) -> None:
        self.head[0] = 0
        n = len(data)
        self.mm[16:16 + n] = data
        self.head[1] = location
        self.head[2] = n
        self.head[0] = key + 1

    def end(self) -> None:
        self.head[0] = 0

    def pending(self) -> tuple[int, int, bytes] | None:
        key1, location, n = self.head[0], self.head[1], self.head[2]
        if not key1 or not 1 <= n <= WAL_SIZE - 16:
            return None
        return key1 - 1, location, bytes(self.mm[16:16 + n])

    def close(self) -> None:
        self.head.release()
        self.mm.close()


def layout_identity(layout: Layout) -> dict:
    """The layout as the state file records it (JSON types)."""
    return json.loads(json.dumps(asdict(layout)))


class PinnedOwner:
    """Who holds keys for programs whose links are pinned (named by the state file)."""

    def __init__(self, path: str):
        self.path = path

    def __repr__(self) -> str:
        return f"pinned programs {self.path}"


def _hex(data: bytes) -> str:
    return bytes(data).hex()


class NamedStore(KVStore):
    """A store with a name, shared by every process that opens it (see the module doc)."""

    # --- create ---------------------------------------------------------------------

    @classmethod
    def create(cls, source: BpfObject | BpfMap | MapHandle | str | os.PathLike, name: str, *,
               map_name: str = DEFAULT_MAP, root: str | os.PathLike | None = None,
               pin_root: str | os.PathLike | None = None, pid: int | None = None,
               tid: int | None = None, grace: Callable[[], None] | None = None,
               manifest: dict | None = None) -> "NamedStore":
        """A new store named ``name`` for a task (default: the calling thread's process... see KVStore).

        ``source`` is a loaded object (its ``map_name`` map), one of its maps,
        a map handle, or the path of a map pinned on bpffs by any loader (the
        layout then comes from the map's BTF in the kernel).  The map gets a
        pin of its own under ``pin_root`` unless it came from a pin.
        ``manifest`` (a JSON-able dict) is recorded as the manifest in force.
        """
        self = cls.__new__(cls)
        self._closed = True
        self._readonly = False
        self._dir = StoreDir(name, root)
        os.makedirs(self._dir.root, mode=0o700, exist_ok=True)
        self._dir.check_root()                   # ours, private, on tmpfs: before anything else
        if pid is None and tid is None:          # the calling thread, as KVStore does
            tid = threading.get_native_id()
            if tid == os.getpid():
                tid, pid = None, tid
        if isinstance(source, BpfObject):
            kv_map = source.map(map_name)
        elif isinstance(source, (str, os.PathLike)):
            kv_map = MapHandle.open_pinned(source)
        else:
            kv_map = source
        try:
            self._setup(kv_map, None, grace, pid, tid)
        except BaseException:
            self._release()
            raise
        finally:
            if isinstance(source, (str, os.PathLike)):
                kv_map.close()
        made = pinned = registered = False
        try:
            start = task_start_time(tid if tid is not None else pid)
            if start is None:
                raise TargetGoneError(f"{self.task} has exited")
            tgt = Target(pid=pid if pid is not None else os.getpid(), start_time=start, tid=tid)
            with root_lock(self._dir.root):          # no gc or destroy drops the pin meanwhile
                self._refuse_second_store(tgt)
                self._dir.make()
                made = True
                if isinstance(source, (str, os.PathLike)):
                    map_pin = os.path.abspath(os.fspath(source))
                else:
                    map_pin, pinned = self._pin_map(bpffs_root(pin_root))
                self._dir.lock()
                self._backing = FileBacking(self._dir.path, self.layout.page_size, create=True)
                self._wal = WriteLog(self._dir.file(WAL), create=True)
                self._map_pages(1)
                self._state = {
                    "name": name,
                    "layout": layout_identity(self.layout),
                    "map": {"pin": map_pin, "id": self.map.id, "name": self.map.name},
                    "target": asdict(tgt),
                    "pin_root": bpffs_root(pin_root),
                    "manifest": manifest,
                    "links": {},
                    "holds": {},
                    "journal": None,
                }
                self._dir.write_state(self._state)   # before registering: open() can adopt
                if pinned:
                    os.unlink(self._dir.file(NEW_PIN))
            if _kp.ARMED:
                _kp.reached("create.state")
            self._register(BPF_NOEXIST)
            registered = True
            self._owners = {}
            self._closed = False
        except BaseException:
            if registered:
                self.map.delete(self._key)
            with root_lock(self._dir.root):
                self._release()
                if made:
                    self._dir.remove()
                if pinned and not pin_in_use(map_pin, self._dir.root):
                    os.unlink(map_pin)
            raise
        _live_stores.add(self)
        return self

    def _refuse_second_store(self, tgt: Target) -> None:
        """One store per task and map: another store's element would be taken over by
        either one's open() (an element holds one set of pages)."""
        for other in list_names(self._dir.root):
            try:
                st = StoreDir(other, self._dir.root).read_state()
            except (StoreStateError, OSError):
                continue
            t, m = st.get("target") or {}, st.get("map") or {}
            if m.get("id") == self.map.id and t.get("start_time") == tgt.start_time and \
                    (t.get("tid") or t.get("pid")) == (tgt.tid or tgt.pid):
                raise InvalidValueError(f"{self.task} already has store {other!r} in map "
                                        f"{self.map.name} (id {self.map.id}); open it, or destroy it first")

    def _pin_map(self, pin_root: str) -> tuple[str, bool]:
        """Pin the store's map under pin_root/maps (once per map; shared by its stores)."""
        maps = os.path.join(pin_root, "maps")
        os.makedirs(maps, mode=0o700, exist_ok=True)
        path = os.path.join(maps, f"{self.map.name}-{self.map.id}")   # bpffs refuses dots
        if os.path.exists(path):
            with MapHandle.open_pinned(path) as other:
                if other.id != self.map.id:
                    raise StoreStateError(f"{path} pins map id {other.id}, not {self.map.id}")
            return path, False
        record = self._dir.file(NEW_PIN)            # a creator killed before its state: gc unpins
        fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, path.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self.map.pin(path)
        return path, True

    # --- open ----------------------------------------------------------------------

    @classmethod
    def open(cls, name: str, *, root: str | os.PathLike | None = None, readonly: bool = False,
             wait: bool = False, grace: Callable[[], None] | None = None) -> "NamedStore":
        """Open the store called name from any process.

        A writer (the default) takes the store's lock (StoreBusyError if
        another process has it, or waits with wait=True), registers the pages
        again if the element is gone while the target lives (adopting a store
        whose creator died), and repairs what a killed writer left (``repairs``
        lists what it did).  Its free space is quarantined until one grace
        period has passed (reclaim() waits it now; a put that needs the space
        waits it then).  A reader (readonly=True) takes no lock and may only
        read; its allocator() shows the published placement.
        """
        self = cls.__new__(cls)
        self._closed = True
        self._dir = d = StoreDir(name, root)
        d.check()
        state = d.read_state()
        if not readonly:
            d.lock(wait=wait)
            state = d.read_state()                  # as the last writer left it
        try:
            mp = state["map"]
            try:
                kv_map = MapHandle.open_pinned(mp["pin"])
                repinned = None
            except LibbpfError as exc:
                kv_map, repinned = cls._map_without_pin(name, state, exc, readonly, d.root)
            with kv_map:
                if kv_map.id != mp["id"]:
                    raise StoreStateError(f"store {name!r}: {mp['pin']} now pins map id {kv_map.id}, "
                                          f"the store was made in map id {mp['id']}")
                layout = Layout.from_btf(kv_map.btf, kv_map.source)
                if layout_identity(layout) != state["layout"]:
                    raise StoreStateError(f"store {name!r}: the layout of {kv_map.source} differs "
                                          "from the one the store was made with")
                tgt = Target(**state["target"])
                if not tgt.alive():
                    raise TargetGoneError(f"store {name!r}: its target (pid {tgt.pid}) has exited "
                                          "or its pid now names another task; `uptrkv gc` removes it")
                self._setup(kv_map, layout, grace, None if tgt.tid else tgt.pid, tgt.tid)
            if not tgt.alive():                      # the pidfd is of the right task: check after
                raise TargetGoneError(f"store {name!r}: its target (pid {tgt.pid}) has exited")
            self._state = state
            self._readonly = readonly
            if not readonly:
                d.remove_stale_temporaries()
            self._backing = FileBacking(d.path, layout.page_size, create=False, readonly=readonly)
            self._map_pages(max(1, self._backing.existing_data_pages()))
            keep = ~self._seq_bits
            self._shadow = [e & keep for e in self._entries.tolist()]
            self._closed = False
            if readonly:
                self._rebuild_allocation(quarantine=False)      # for allocator(), free_bytes()
                self._refuse_writes()
            else:
                self._wal = WriteLog(d.file(WAL), create=True)
                self._adopt()
                if repinned:
                    self.repairs.append(f"the map's pin {repinned} was gone: pinned again")
        except BaseException:
            self._closed = True
            self._release()
            raise
        _live_stores.add(self)
        return self

    @staticmethod
    def _map_without_pin(name: str, state: dict, exc: LibbpfError, readonly: bool, root: str) -> tuple:
        """The map by its id when its pin is gone (removed by hand, or by an older uptrkv's gc
        racing a create), pinned again by a writer if the pin was ours.  MapGoneError if
        the map itself is gone; StoreStateError if the id now names another map."""
        mp = state["map"]
        if exc.errno != errno.ENOENT:
            raise StoreStateError(f"store {name!r}: its map pin {mp['pin']} cannot be opened "
                                  f"({exc.strerror}); the store cannot be used") from None
        try:
            kv_map = MapHandle.from_id(mp["id"])
        except LibbpfError as by_id:
            if by_id.errno != errno.ENOENT:
                raise StoreStateError(f"store {name!r}: its map pin {mp['pin']} is gone, and map id "
                                      f"{mp['id']} cannot be opened ({by_id.strerror}); the store "
                                      "cannot be used here") from None
            raise MapGoneError(f"store {name!r}: its map (id {mp['id']}, pinned at {mp['pin']}) is "
                               "gone, and the element with it; `uptrkv destroy` removes the store") from None
        if kv_map.name != mp["name"]:
            kv_map.close()
            raise MapGoneError(f"store {name!r}: its map (id {mp['id']}) is gone: that id now names "
                               f"map {kv_map.name!r}; `uptrkv destroy` removes the store")
        ours = os.path.dirname(mp["pin"]) == os.path.join(state.get("pin_root") or "", "maps")
        if readonly or not ours:
            return kv_map, None
        try:
            with root_lock(root):
                if os.path.exists(mp["pin"]):
                    return kv_map, None             # pinned again meanwhile (by another writer)
                os.makedirs(os.path.dirname(mp["pin"]), mode=0o700, exist_ok=True)
                kv_map.pin(mp["pin"])
        except OSError as pin_exc:
            kv_map.close()
            raise StoreStateError(f"store {name!r}: its map pin {mp['pin']} is gone and cannot be "
                                  f"made again ({pin_exc.strerror})") from None
        return kv_map, mp["pin"]

    def _adopt(self) -> None:
        """Make the kernel's element name exactly these pages, then repair."""
        exists = self.map.lookup(self._key) is not None
        self._register(BPF_EXIST if exists else BPF_NOEXIST)
        self.repairs: list[str] = []
        self._replay_write()
        self._rebuild_allocation()
        self._restore_holds()          # before the journal: a rolled-forward key may go to its held place
        self._finish_journal()

    def _replay_write(self) -> None:
        """Finish an in-place write the dead writer left with its sequence count odd.

        Only then: an even count means the write ended (or never began), and a
        BPF write since must stay.  BPF's own writes hold the count odd for
        nanoseconds, so a count that stays odd belongs to the dead writer."""
        rec = self._wal.pending()
        if rec is None:
            return
        key, location, data = rec
        slot = self.layout.decode(location | self._init_bit)
        entry = self._entries[key]
        if slot is not None and slot.size == len(data) and entry & self._init_bit \
                and self._location(entry) == location and entry & self._seq_one:
            deadline = time.monotonic() + STUCK_ODD_SECONDS
            while self._entries[key] == entry and time.monotonic() < deadline:
                time.sleep(0.001)
            if self._entries[key] == entry:
                self._pages[slot.page].view[slot.offset:slot.end] = data
                self._entries[key] = (entry & ~self._seq_bits) | ((entry + self._seq_one) & self._seq_bits)
                self.repairs.append(f"key {key}: an in-place write cut short was done again")
        self._wal.end()

    def _rebuild_allocation(self, quarantine: bool = True) -> None:
        """The allocation from the metadata page (live and unavailable entries; the journal's
        new places), with every free byte quarantined until one grace period has passed
        (a writer; a reader only inspects it)."""
        lay = self.layout
        journal = self._state.get("journal") or {}
        placed = {int(k) for k in (journal.get("placed") or {})}
        slots = []
        for key, entry in enumerate(self._entries.tolist()):
            if entry and not entry & self._init_bit:           # unavailable: its old place,
                if key in placed:                              # unless its new value is journaled
                    continue                                   # (then the old place is free)
                entry = (entry & ~self._seq_bits) | self._init_bit
            if entry:
                try:
                    slot = self._valid(key, entry)
                except CorruptStoreError:
                    continue                # verify() names it, delete(key) drops it
                if slot is not None:
                    slots.append(slot)
        for key, (page, off, size, _) in (journal.get("placed") or {}).items():
            slot = Slot(page, off, size)
            if slot not in slots:
                slots.append(slot)
        # Places pinned programs know (known keys) stay theirs even where no entry names them.
        orphans = set()
        for held in (self._state.get("holds") or {}).values():
            for v in held.values():
                if Slot(*v) not in slots:
                    orphans.add(Slot(*v))
        alloc = Allocator(lay.page_size, lay.max_pages, len(self._pages))
        for slot in sorted(set(slots) | orphans):
            alloc.reserve(slot)
        alloc.pages = max(alloc.pages, len(self._pages))
        if quarantine:
            alloc.quarantine_gaps()
        for slot in orphans:
            alloc.retire(slot)
        self._alloc = alloc

    def _finish_journal(self) -> None:
        """Roll a move a writer left half done forward (or back, for a function's conversion)."""
        journal = self._state.get("journal") or {}
        placed = {int(k): v for k, v in (journal.get("placed") or {}).items()}
        marked = {int(k): v for k, v in (journal.get("marked") or {}).items()}
        lay = self.layout
        busy = {k: e for k, e in enumerate(self._entries.tolist()) if e and not e & self._init_bit}
        for key, (page, off, size, value) in placed.items():
            slot = Slot(page, off, size)
            entry = self._entries[key]
            if entry & self._init_bit and self._location(entry) == lay.encode(slot):
                continue                                        # published before the writer died
            if key in busy:                                     # its old place is quarantined free space
                busy.pop(key)
                self._pages[page].view[off:off + size] = bytes.fromhex(value)
                self._publish(key, slot)
                self.repairs.append(f"key {key}: a move was finished (rolled forward)")
                if _kp.ARMED:
                    _kp.reached("repair.forward")
        # A switch (a rollout's while_unavailable) that did not return: the old version may
        # still be the one attached, so its keys go back; once it returned, forward.
        switch_done = not journal.get("switch") or journal.get("switched")
        forward = {k: c for k, c in marked.items() if c is not None} if not placed and switch_done else {}
        for key in forward:                 # keys the writer had not marked yet: the whole batch moves
            if key not in busy and self._entries[key] & self._init_bit:
                if self._swap(key, lay.busy) & self._init_bit:
                    busy[key] = self._entries[key]
        forward = {k: c for k, c in forward.items() if k in busy}
        if forward:
            self._roll_forward(forward, busy, journal)
        for key, entry in busy.items():                        # never journaled, or a function's
            restored = (entry & ~self._seq_bits) | self._init_bit
            self._entries[key] = restored
            self._shadow[key] = restored
            self.repairs.append(f"key {key}: made available again with its old value (rolled back)")
        if journal:
            self._set_state(journal=None)

    def _roll_forward(self, forward: dict, busy: dict, journal: dict) -> None:
        """Convert the journaled keys from their old bytes, as convert() would have; if they
        cannot all fit, they all keep their old values (rolled back by the caller)."""
        lay = self.layout
        olds = {k: lay.decode((busy[k] & ~self._seq_bits) | self._init_bit) for k in forward}
        values = {}
        for key, conv in forward.items():
            old = bytes(self._pages[olds[key].page].view[olds[key].offset:olds[key].end])
            values[key] = (old[:conv] + bytes(max(0, conv - len(old)))) if isinstance(conv, int) \
                else bytes.fromhex(conv)
        self._wait_grace()                                # nobody uses the old places now
        trial = self._alloc.copy()
        held = self._held_slots()
        for old in olds.values():
            if old in held:                               # a pinned program still knows it
                trial.retire(old)
            else:
                trial.release(old)
        given = {int(k): Slot(*v) for k, v in (journal.get("places") or {}).items()}
        places = {}
        try:
            for key, value in sorted(values.items(), key=lambda kv: (-len(kv[1]), kv[0])):
                slot = given.get(key)
                if slot is not None and slot.size == len(value) and slot in trial.quarantined:
                    trial.unretire(slot)                  # the place a pinned program resolved
                else:
                    slot = trial.allocate(len(value))
                places[key] = slot
        except StoreFullError:
            self.repairs.append(f"keys {sorted(forward)}: their conversion no longer fits "
                                "the store: rolled back instead")
            return
        while trial.pages > len(self._pages):
            self._add_page()
        self._alloc = trial
        for key, slot in places.items():
            self._pages[slot.page].view[slot.offset:slot.end] = values[key]
            self._publish(key, slot)
            busy.pop(key)
            self.repairs.append(f"key {key}: a conversion was finished (rolled forward)")
            if _kp.ARMED:
                _kp.reached("repair.forward")

    # --- readers ------------------------------------------------------------------------

    def _sync(self) -> Allocator:
        if self._readonly:          # a reader follows the writer: the placement as published now
            keep = ~self._seq_bits
            self._shadow = [e & keep for e in self._entries.tolist()]
            self._rebuild_allocation(quarantine=False)
            return self._alloc
        return super()._sync()

    def verify(self) -> list[str]:
        if self._readonly:
            keep = ~self._seq_bits
            self._shadow = [e & keep for e in self._entries.tolist()]
        return super().verify()

    # --- holds that outlive a process ---------------------------------------------------

    def hold_pinned(self, owner: str, keys, *, save: bool = True) -> dict[int, Slot]:
        """hold() for programs that outlive this process (pinned links): recorded in the
        state file under ``owner`` and held again by every later open().  save=False
        leaves the file to the caller's next update_state() (one write for several fields)."""
        self._check_writer("hold keys of")
        token = self._owners.setdefault(owner, PinnedOwner(owner))
        slots = self.hold(keys, token)
        held = dict(self._state.get("holds") or {})
        mine = dict(held.get(owner) or {})
        mine.update({str(k): list(s) for k, s in slots.items()})
        held[owner] = mine
        if save:
            self._set_state(holds=held)
        else:
            self._state = dict(self._state, holds=held)
        return slots

    def pinned_owner(self, owner: str) -> "PinnedOwner | None":
        """The token that holds owner's keys in this process (see hold()), or None."""
        return getattr(self, "_owners", {}).get(owner)

    def release_pinned(self, owner: str) -> dict[int, Slot]:
        """Drop hold_pinned(owner) (its programs are detached); waits a grace period if needed."""
        self._check_writer("release keys of")
        token = self._owners.pop(owner, None)
        slots = self.release(token) if token is not None else {}
        held = dict(self._state.get("holds") or {})
        if held.pop(owner, None) is not None:
            self._set_state(holds=held)
        return slots

    def _restore_holds(self) -> None:
        self._owners: dict[str, PinnedOwner] = {}
        for owner, slots in (self._state.get("holds") or {}).items():
            token = self._owners[owner] = PinnedOwner(owner)
            self.hold({int(k): Slot(*v) for k, v in slots.items()}, token)

    # --- journal, state ----------------------------------------------------------------

    def _journal(self, phase: str | None, keys: Mapping | None = None,
                 places: Mapping[int, Slot] | None = None, switch: bool = False) -> None:
        if phase is None:
            if self._state.get("journal") is not None:
                self._set_state(journal=None)
            return
        journal = dict(self._state.get("journal") or {})
        if phase == "marked":
            journal = {"marked": {str(k): (v if v is None or isinstance(v, int) else _hex(v))
                                  for k, v in keys.items()},
                       "places": {str(k): list(s) for k, s in (places or {}).items()},
                       "switch": switch}
        elif phase == "switched":
            journal["switched"] = True
        else:
            journal["placed"] = {str(k): [s.page, s.offset, s.size, _hex(v)]
                                 for k, (s, v) in keys.items()}
        self._set_state(journal=journal)

    def mark_switched(self) -> None:
        """The switch of the move in progress is done (the new version is attached): a
        repair rolls it forward from now on, even if convert() has not returned from it."""
        if (self._state.get("journal") or {}).get("marked") is not None:
            self._journal("switched")

    def _set_state(self, **fields) -> None:
        self._state = dict(self._state, **fields)
        self._dir.write_state(self._state)

    @property
    def name(self) -> str:
        return self._dir.name

    @property
    def path(self) -> str:
        return self._dir.path

    @property
    def state(self) -> dict:
        """The state file as this process last read or wrote it (a copy)."""
        return dict(self._state)

    def update_state(self, **fields) -> None:
        """Record fields (such as ``manifest``) in the state file; writers only."""
        self._check()
        self._check_writer("update the state of")
        self._set_state(**fields)

    def _check_writer(self, what: str) -> None:
        if self._readonly or not self._dir.locked:
            raise StoreStateError(f"cannot {what} store {self.name!r}: it was opened read-only")

    def _refuse_writes(self) -> None:
        def refuse(*args, **kwargs):
            raise StoreStateError(f"store {self.name!r} was opened read-only; open it "
                                  "without readonly=True to change it")
        for name in ("put", "put_u64", "put_u32", "put_many", "delete", "resize", "convert",
                     "compact", "stage", "publish_staged", "discard_staged", "reclaim",
                     "ensure_pages", "reserve_place", "retire_place", "update_state", "destroy",
                     "hold", "release", "hold_pinned", "release_pinned", "mark_switched"):
            setattr(self, name, refuse)
        # Reads check the entry again after the copy: the writer (another process) may
        # delete a key and reuse its place once a grace period has passed, which protects
        # BPF programs, not a reader that a scheduler paused between the entry and the copy.
        self.get = self._reader_get
        self.get_u64 = lambda key: int.from_bytes(self._reader_sized(key, 8, "get_u64"), "little")
        self.get_u32 = lambda key: int.from_bytes(self._reader_sized(key, 4, "get_u32"), "little")
        self.get_into = self._reader_get_into

    def _reader_get(self, key: int) -> bytes:
        for _ in range(1000):
            slot = self._require(key)
            entry = self._entries[key]
            data = self._read(key, slot)
            if self._entries[key] == entry:
                return data
        raise StoreBusyError(f"key {key} changed during every read; retry later")

    def _reader_sized(self, key: int, size: int, what: str) -> bytes:
        data = self._reader_get(key)
        if len(data) != size:
            raise InvalidValueError(f"key {key} holds {len(data)} bytes; {what} needs {size}")
        return data

    def _reader_get_into(self, key: int, buffer) -> int:
        data = self._reader_get(key)
        dst = memoryview(buffer).cast("B")
        if dst.readonly:
            raise TypeError(f"get_into needs a writable buffer, {type(buffer).__name__} is read-only")
        if dst.nbytes < len(data):
            raise InvalidValueError(f"key {key} holds {len(data)} bytes, the buffer has {dst.nbytes}")
        dst[:len(data)] = data
        return len(data)

    def _valid(self, key: int, entry: int) -> Slot | None:
        if self._readonly:
            if entry and not entry & self._init_bit:        # the writer is moving it: wait
                deadline = time.monotonic() + READER_WAIT_SECONDS
                while entry and not entry & self._init_bit:
                    if time.monotonic() > deadline:
                        raise StoreBusyError(f"key {key} is being moved by the store's writer "
                                             f"(for more than {READER_WAIT_SECONDS} s); retry")
                    time.sleep(0.001)
                    entry = self._entries[key]
            slot = self.layout.decode(entry)
            if slot is not None and slot.page >= len(self._pages):
                self._map_new_pages()                       # the writer added pages since
        return super()._valid(key, entry)

    def _map_new_pages(self) -> None:
        for i in range(len(self._pages), self._backing.existing_data_pages()):
            self._pages.append(self._backing.data(i))
        self._init_fast()

    # --- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Unmap the pages and give up the writer lock; the store lives on for other processes."""
        if self._closed:
            return
        self._closed = True
        self._release()

    def _release(self) -> None:
        wal = getattr(self, "_wal", None)
        if wal is not None:
            wal.close()
            self._wal = None
        super()._release()
        d = getattr(self, "_dir", None)
        if d is not None:
            d.unlock()

    def destroy(self) -> None:
        """Delete the element (the kernel unpins the pages), the store's pinned links, and its files."""
        self._check()
        self._check_owner()
        self._check_writer("destroy")
        for link in list((self._state.get("links") or {}).values()):
            try:
                os.unlink(link["pin"])
            except FileNotFoundError:
                pass
        try:
            self.map.delete(self._key)
        except LibbpfError as exc:
            if exc.errno not in (errno.ENOENT, errno.ESRCH):
                raise
        d = self._dir
        self._closed = True
        self._release()
        d.remove()


def open_store(name: str, **kwargs) -> NamedStore:
    return NamedStore.open(name, **kwargs)
