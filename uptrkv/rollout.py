"""Program rollout without map copies: diff two manifests, switch versions, or roll back.

The process that owns a store's pages runs the rollout.  A version is a
loaded object, its links and its manifest (:class:`Deployment`).  Rolling
out a new object:

1. plan: diff the manifests by key id (added, removed, resized, replaced,
   kept) and check the store can hold the new keys while the removed ones
   still exist; a store that cannot is refused before anything changes;
2. stage: write added keys (published: the old program does not use them)
   and the new bytes of resized or replaced keys (not yet published: the
   old program keeps reading the old entry);
3. open the new object with the store's map reused (the pinned path when the
   store is pinned), load it, check its layout and embedded manifest, attach;
4. switch: publish the staged entries, detach the old program, delete the
   removed keys, close the old object.

Known keys (KV_KNOWN) of the new object are resolved in step 3 to where
the store holds them after the switch (a resized key: its staged place) and
held until that object closes; the old object's holds go when it closes.

A failure in 2 or 3 detaches and closes whatever of the new version exists,
deletes the added keys and drops the staged bytes: the old program stays
attached and the store holds exactly its old keys, sizes and bytes.  Data
pages added while staging stay registered (empty).

Between the new program's attach and the old one's detach both run; a
resized key changes size in that window (microseconds), so a version that
reads it with the other size gets -E2BIG or -EMSGSIZE for those runs.
"""

from __future__ import annotations

import os
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
    bytes_staged: int = 0

    def rows(self) -> list[tuple[str, ...]]:
        rows = [("kept", str(k.id), k.name, f"{k.size}", "") for k in self.kept]
        rows += [("added", str(k.id), k.name, f"{k.size}", "initial value" if k.init else "zeroed")
                 for k in self.added]
        rows += [("resized", str(n.id), n.name, f"{o.size} -> {n.size}",
                  f"first {min(o.size, n.size)} bytes kept") for o, n in self.resized]
        rows += [("replaced", str(n.id), f"{o.name} -> {n.name}", f"{o.size} -> {n.size}",
                  "new value") for o, n in self.replaced]
        rows += [("removed", str(k.id), k.name, f"{k.size}", "freed after the switch")
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
        lines.append(f"space: {self.bytes_staged} bytes staged next to the old values; "
                     f"{self.free_before} bytes free in {self.pages_before} page(s) now, "
                     f"{self.pages_during} page(s) during the switch")
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
    for k in old.keys:
        if k.id not in store:
            raise RolloutError(f"the store does not match the running manifest {old.source}: "
                               f"key {k.name!r} (id {k.id}) holds no value")
        if store.size(k.id) != k.size:
            raise RolloutError(f"the store does not match the running manifest {old.source}: "
                               f"key {k.name!r} (id {k.id}) holds {store.size(k.id)} bytes, not {k.size}")
    for k in p.added:
        if k.id in store:
            raise RolloutError(f"key {k.name!r} (id {k.id}) is new in {new.source} but the store "
                               "already holds a value for it; delete it or declare it in the running manifest")
    sim: Allocator = store.allocator()
    p.pages_before = sim.pages
    p.free_before = sim.free_bytes()
    staged = [k.size for k in p.added] + [n.size for _, n in p.resized + p.replaced]
    p.bytes_staged = sum(staged)
    try:
        for size in staged:          # the order rollout() stages them in
            sim.allocate(size)
    except StoreFullError as exc:
        raise StoreFullError(f"the store cannot hold {new.source} next to {old.source}: "
                             f"{p.bytes_staged} bytes to stage, {exc}") from None
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


def rollout(store: KVStore, current: Deployment, new_object: str | os.PathLike,
            new_manifest: Manifest, *, configure: Callable[[BpfObject], None] | None = None,
            programs: Iterable[str] | None = None, map_name: str = DEFAULT_MAP) -> Deployment:
    """Switch from ``current`` to ``new_object``; on failure nothing changes (see module doc)."""
    the_plan = plan(store, current.manifest, new_manifest)   # raises before any change
    added: list[int] = []
    staged: list[int] = []
    staged_slots: dict[int, Slot] = {}
    new_obj: BpfObject | None = None
    links: list[BpfLink] = []
    step = "staging the new keys"
    try:
        for k in the_plan.added:
            store.put(k.id, k.initial())
            added.append(k.id)
        for old, new in the_plan.resized:
            keep = store.get(old.id)[:new.size]
            staged_slots[new.id] = store.stage(new.id, keep + bytes(new.size - len(keep)))
            staged.append(new.id)
        for old, new in the_plan.replaced:
            staged_slots[new.id] = store.stage(new.id, new.initial())
            staged.append(new.id)

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
        known_keys.resolve(new_obj, store, staged_slots)    # new constants; held until it closes
        step = f"loading {new_object}"
        new_obj.load()
        step = f"attaching {new_object}"
        links = _attach(new_obj, programs)
    except BaseException as exc:
        for link in links:
            link.close()
        if new_obj is not None:
            new_obj.close()
        for key in staged:
            store.discard_staged(key)
        for key in added:
            store.delete(key)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise RolloutError(f"rollout failed while {step}: {exc}\n"
                           f"the running version stays attached and the store is unchanged") from exc

    for key in staged:
        store.publish_staged(key)
    current.close()
    for k in the_plan.removed:
        store.delete(k.id)
    return Deployment(new_obj, links, new_manifest)
