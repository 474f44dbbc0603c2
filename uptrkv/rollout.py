"""Program rollout without map copies: diff two manifests, switch versions, or roll back.

The process that owns a store's pages runs the rollout.  A version is a
loaded object, its links and its manifest (:class:`Deployment`).  Rolling
out a new object:

1. plan: diff the manifests by key id (added, removed, resized, replaced,
   kept) and check the store can hold the result; a store that cannot is
   refused before anything changes;
2. add: write and publish the added keys (the old version does not use them);
3. open the new object with the store's map reused (the pinned path when the
   store is pinned), check its layout and embedded manifest, load it;
4. switch, through :meth:`KVStore.convert` (one grace period):
   resized and replaced keys become unavailable (BPF: -EAGAIN), the new
   version attaches, the old one detaches, removed keys are deleted; after
   one grace period no old program runs any more, so resized keys are
   copied (common prefix, growth zeroed) from bytes nobody writes, replaced
   keys get their initial value, and both are published.

So the result holds every write either version made to a kept or resized
key up to the switch, and neither version ever writes a replaced key's
other meaning.  A failure in 2 or 3, or an attach failure in 4, detaches and
closes whatever of the new version exists, deletes the added keys and puts
the old entries back: the old program stays attached and the store holds
exactly its old keys, sizes and bytes.  Data pages added meanwhile stay
registered (empty).

Known keys (KV_KNOWN) of the new object are resolved in step 3, before its
load: a kept or added key to where it is, a resized or replaced one to
fresh space reserved for it (:meth:`KVStore.reserve_place`), where the
switch then publishes its converted value.  The new version holds them
until it closes; the old version's holds go when it is detached in the
switch (and come back if the switch fails and it is attached again).  A
write the new version makes to a resized or replaced known key before the
key is published (the unavailable window) is overwritten by the converted
value.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from . import known_keys
from .allocator import Allocator, Slot
from .errors import RolloutError, StoreFullError
from .layout import Layout
from .loader import BpfLink, BpfObject
from .manifest import KeySpec, Manifest, read_object
from .store import DEFAULT_MAP, KVStore


@dataclass
class Deployment:
    """A running program version."""

    obj: BpfObject
    links: list[BpfLink]
    manifest: Manifest
    switch: "SwitchTimes | None" = None     # how the rollout that started it went

    def close(self) -> None:
        for link in self.links:
            link.close()
        self.links = []
        self.obj.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class Plan:
    """What a rollout will change; ``str(plan)`` prints it as a table."""

    old: Manifest
    new: Manifest
    kept: list[KeySpec] = field(default_factory=list)
    added: list[KeySpec] = field(default_factory=list)
    removed: list[KeySpec] = field(default_factory=list)
    resized: list[tuple[KeySpec, KeySpec]] = field(default_factory=list)
    replaced: list[tuple[KeySpec, KeySpec]] = field(default_factory=list)
    pages_before: int = 0
    pages_during: int = 0
    free_before: int = 0
    bytes_added: int = 0
    bytes_converted: int = 0

    def rows(self) -> list[tuple[str, ...]]:
        rows = [("kept", str(k.id), k.name, f"{k.size}", "") for k in self.kept]
        rows += [("added", str(k.id), k.name, f"{k.size}", "initial value" if k.init else "zeroed")
                 for k in self.added]
        rows += [("resized", str(n.id), n.name, f"{o.size} -> {n.size}",
                  f"first {min(o.size, n.size)} bytes kept") for o, n in self.resized]
        rows += [("replaced", str(n.id), f"{o.name} -> {n.name}", f"{o.size} -> {n.size}",
                  "initial value" if n.init else "zeroed") for o, n in self.replaced]
        rows += [("removed", str(k.id), k.name, f"{k.size}", "deleted at the switch")
                 for k in self.removed]
        return sorted(rows, key=lambda r: int(r[1]))

    def table(self) -> str:
        """The diff as a table, without the space line."""
        head = ("change", "id", "name", "bytes", "note")
        rows = [head] + self.rows()
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = [f"rollout plan: {self.old.source} -> {self.new.source}"]
        for n, r in enumerate(rows):
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
            if n == 0:
                lines.append("  " + "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __str__(self) -> str:
        lines = [self.table()]
        lines.append(f"space: {self.bytes_added} bytes added before the switch, {self.bytes_converted} "
                     f"bytes converted after it; {self.free_before} bytes free in {self.pages_before} "
                     f"page(s) now, {self.pages_during} page(s) after the switch")
        return "\n".join(lines)


def diff(old: Manifest, new: Manifest) -> Plan:
    """The key changes from old to new, by id (no store involved)."""
    p = Plan(old, new)
    a, b = old.by_id, new.by_id
    for kid in sorted(set(a) | set(b)):
        o, n = a.get(kid), b.get(kid)
        if n is None:
            p.removed.append(o)
        elif o is None:
            p.added.append(n)
        elif o.name != n.name:
            p.replaced.append((o, n))
        elif o.size != n.size:
            p.resized.append((o, n))
        else:
            p.kept.append(n)
    return p


def plan(store: KVStore, old: Manifest, new: Manifest) -> Plan:
    """Dry run: the diff and the space it needs; StoreFullError if it cannot fit."""
    p = diff(old, new)
    slots = store.slots()
    for k in old.keys:
        if k.id not in slots:
            raise RolloutError(f"the store does not match the running manifest {old.source}: "
                               f"key {k.name!r} (id {k.id}) holds no value")
        if slots[k.id].size != k.size:
            raise RolloutError(f"the store does not match the running manifest {old.source}: "
                               f"key {k.name!r} (id {k.id}) holds {slots[k.id].size} bytes, not {k.size}")
    for k in p.added:
        if k.id in slots:
            raise RolloutError(f"key {k.name!r} (id {k.id}) is new in {new.source} but the store "
                               "already holds a value for it; delete it or declare it in the running manifest")
    sim: Allocator = store.allocator()
    p.pages_before = sim.pages
    p.free_before = sim.free_bytes()
    p.bytes_added = sum(k.size for k in p.added)
    p.bytes_converted = sum(n.size for _, n in p.resized + p.replaced)
    try:
        for k in p.added:                          # added first, as rollout() does
            sim.allocate(k.size)
        # at the switch: removed keys deleted, one grace period, converted keys placed
        for k in p.removed:
            sim.retire(slots[k.id])
        sim.release_quarantine()
        for _, n in p.resized + p.replaced:
            sim.release(slots[n.id])
        sim.place_batch({n.id: n.size for _, n in p.resized + p.replaced})
    except StoreFullError as exc:
        raise StoreFullError(f"the store cannot hold {new.source} next to {old.source}: "
                             f"{p.bytes_added} bytes to add, {p.bytes_converted} to convert; {exc}") from None
    p.pages_during = sim.pages
    return p


def start(store: KVStore, obj: BpfObject, manifest: Manifest,
          programs: Iterable[str] | None = None) -> Deployment:
    """First version: seed missing keys from the manifest, then attach the programs."""
    for k in manifest.keys:
        if k.id in store:
            if store.size(k.id) != k.size:
                raise RolloutError(f"key {k.name!r} (id {k.id}) holds {store.size(k.id)} bytes, "
                                   f"{manifest.source} says {k.size}")
        else:
            store.put(k.id, k.initial())
    return Deployment(obj, _attach(obj, programs), manifest)


def _attach(obj: BpfObject, programs: Iterable[str] | None) -> list[BpfLink]:
    names = [p.name for p in obj.programs()] if programs is None else list(programs)
    links: list[BpfLink] = []
    try:
        for name in names:
            links.append(obj.program(name).attach())
    except BaseException:
        for link in links:
            link.close()
        raise
    return links


@dataclass
class SwitchTimes:
    """How long a rollout's switch took, in seconds (``Deployment.switch``)."""

    unavailable: float = 0.0    # resized/replaced keys unavailable (-EAGAIN) to both versions
    both_attached: float = 0.0  # new version attached .. old version detached
    grace: float = 0.0          # the one grace period
    publish: float = 0.0        # copy, convert and publish the changed keys
    keys: int = 0               # keys made unavailable


def rollout(store: KVStore, current: Deployment, new_object: str | os.PathLike,
            new_manifest: Manifest, *, configure: Callable[[BpfObject], None] | None = None,
            programs: Iterable[str] | None = None, map_name: str = DEFAULT_MAP,
            on_attached: Callable[[list[BpfLink]], None] | None = None) -> Deployment:
    """Switch from ``current`` to ``new_object``; on failure nothing changes (see module doc).

    ``on_attached(links)`` runs once the new version is attached, before the
    old one is detached (a deployment pins the new links there, so that a
    process killed in the switch leaves a version attached)."""
    the_plan = plan(store, current.manifest, new_manifest)   # raises before any change
    added: list[int] = []
    places: dict[int, Slot] = {}
    new_obj: BpfObject | None = None
    step = "adding the new keys"
    try:
        for k in the_plan.added:
            store.put(k.id, k.initial())
            added.append(k.id)

        step = f"opening {new_object}"
        new_obj = BpfObject(new_object)
        embedded = read_object(new_object)
        if embedded is not None and {k.id: (k.name, k.size) for k in embedded.keys} != \
                {k.id: (k.name, k.size) for k in new_manifest.keys}:
            raise RolloutError(f"{embedded.source} declares other keys than {new_manifest.source}")
        if Layout.from_btf(new_obj.btf, str(new_object)) != store.layout:
            raise RolloutError(f"{new_object} was built with another store layout")
        kv_map = new_obj.map(map_name)
        if store.pin_path:
            kv_map.reuse_pinned(store.pin_path)
        else:
            kv_map.reuse_fd(store.map.fd)
        if configure is not None:
            configure(new_obj)
        step = f"resolving the known keys of {new_object}"
        changed = {n.id: n.size for _, n in the_plan.resized + the_plan.replaced}
        for k in known_keys.declared(new_obj):
            if k.id in changed:
                places[k.id] = store.reserve_place(changed[k.id])
        known_keys.resolve(new_obj, store, places)    # new constants; held until it closes
        step = f"loading {new_object}"
        new_obj.load()
        step = "checking the space the switch needs"
        changes = {n.id: n.size for _, n in the_plan.resized}
        changes.update({n.id: n.initial() for _, n in the_plan.replaced})
        after = store.convert_plan({k: size for k, size in changed.items() if k not in places},
                                   deleted=[k.id for k in the_plan.removed], placed=list(places))
        store.ensure_pages(after.pages)
    except BaseException as exc:
        _undo(store, new_obj, [], added, places)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise RolloutError(f"rollout failed while {step}: {exc}\n"
                           f"the running version stays attached and the store is unchanged") from exc

    links: list[BpfLink] = []
    old_programs = [link.program_name for link in current.links]
    times = SwitchTimes()
    old_holds: dict[int, Slot] = {}

    def switch() -> None:
        nonlocal links
        links = _attach(new_obj, programs)
        t_attached = time.perf_counter()
        if on_attached is not None:
            on_attached(links)
        for link in current.links:
            link.close()
        times.both_attached = time.perf_counter() - t_attached
        current.links = []
        old_holds.update(store.release(current.obj))     # detached: its known keys may change now
        for k in the_plan.removed:
            store.delete(k.id)
            deleted.append(k.id)

    deleted: list[int] = []
    try:
        store.convert(changes, while_unavailable=switch, places=places)
    except BaseException as exc:
        state = "the running version stays attached"
        if not current.links:       # failed after the old version detached: attach it again
            try:
                if old_holds:
                    store.hold(old_holds, current.obj)
                current.links = _attach(current.obj, old_programs)
                state = "the old version had been detached and is attached again"
            except Exception as again:  # noqa: BLE001 - reported in the message below
                state = (f"the old version had been detached and attaching it again failed "
                         f"({again}): no version is attached")
        _undo(store, new_obj, links, added, places)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        if deleted:
            state += (f"; the keys removed by the new manifest ({', '.join(map(str, deleted))}) "
                      "were already deleted and stay deleted; every other key has its old value")
        else:
            state += " and the store is unchanged"
        raise RolloutError(f"rollout failed while switching to {new_object}: {exc}\n{state}") from exc
    c = store.last_convert
    times.unavailable, times.grace, times.publish, times.keys = c.unavailable, c.grace, c.publish, c.keys
    current.close()
    deployment = Deployment(new_obj, links, new_manifest)
    deployment.switch = times
    return deployment


def _undo(store: KVStore, new_obj: BpfObject | None, links: list[BpfLink], added: list[int],
          places: dict[int, Slot]) -> None:
    for link in links:
        link.close()
    for slot in places.values():    # never published; quarantined, the new version may have run
        store.retire_place(slot)
    if new_obj is not None:
        new_obj.close()
    for key in added:
        store.delete(key)
