"""Program versions on a named store that outlive the process that attached them.

A named store (:mod:`.named_store`) outlives its creator; so do the programs
attached here: each link is pinned on bpffs under
``<pin_root>/links/<store>/<program>`` and recorded in the store's state
file (``links``: program -> {pin, object}).  The object is closed in this
process afterwards; the pins keep the programs attached.

- :func:`attach`: open an object, reuse the store's map, set its
  ``target_tgid`` global (when it has one) to the store's target, resolve
  its known keys and hold them in the state file (``hold_pinned``, owner:
  the store's link directory), load, attach and pin every program.
- :func:`detach`: unpin the links and wait until their programs are gone
  (the kernel detaches a link once its last reference goes), then release
  the holds.
- :func:`rollout`: :func:`uptrkv.rollout.rollout` with the pinned links as
  the running version: the new version is attached, the old links are
  unpinned inside the switch, and the new links are pinned once the switch
  is over.
- :func:`seed`: values typed by a manifest, written with one ``put_many``.

Layers: above named_store, known_keys, manifest and rollout; below cli.
"""

from __future__ import annotations

import ctypes
import errno
import os
import time
from typing import Iterable, Mapping

from . import _libbpf, known_keys
from . import rollout as _rollout
from ._libbpf import LibbpfError, lib
from .errors import InvalidKeyError, InvalidValueError, RolloutError, StoreStateError
from .layout import Layout
from .loader import BpfObject
from .manifest import KeySpec, Manifest, parse_bytes, read_object
from .named_store import NamedStore
from .store import DEFAULT_MAP

LINKS = "links"
TARGET_GLOBAL = "target_tgid"
DETACH_TIMEOUT = 10.0


# --- names and the recorded manifest ---------------------------------------------------

def bpffs_name(name: str) -> str:
    """bpffs refuses '.' in names; store names may hold one ('~' is not allowed in a name)."""
    return name.replace(".", "~")


def link_dir(store: NamedStore) -> str:
    """Where the store's links are pinned (also the owner of their holds)."""
    return os.path.join(store.state["pin_root"], LINKS, bpffs_name(store.name))


def manifest_of(store: NamedStore) -> Manifest | None:
    """The manifest in force, as recorded in the state file (None if the store has none)."""
    d = store.state.get("manifest")
    return Manifest.from_dict(d) if d else None


def key_spec(store: NamedStore, key: str | int, manifest: Manifest | None = None) -> tuple[int, KeySpec | None]:
    """A key given as an id or a manifest name -> (id, its KeySpec or None)."""
    m = manifest if manifest is not None else manifest_of(store)
    if isinstance(key, str) and not key.strip().lstrip("-").isdigit():
        if m is None or key not in m.by_name:
            known = ", ".join(k.name for k in m.keys) if m else "the store has no manifest"
            raise InvalidKeyError(f"store {store.name!r} has no key named {key!r} ({known})")
        spec = m.by_name[key]
        return spec.id, spec
    kid = int(key)
    if not 0 <= kid < store.layout.max_keys:
        raise InvalidKeyError(f"key {kid} is outside 0..{store.layout.max_keys - 1}")
    return kid, (m.by_id.get(kid) if m else None)


# --- seeding ---------------------------------------------------------------------------

def encode_values(store: NamedStore, values: Mapping, manifest: Manifest | None = None) -> dict[int, bytes]:
    """{name or id: user value} -> {id: bytes}, typed by the manifest; raises before any change."""
    m = manifest if manifest is not None else manifest_of(store)
    out: dict[int, bytes] = {}
    for key, value in values.items():
        kid, spec = key_spec(store, str(key), m)
        if kid in out:
            raise InvalidValueError(f"key {key!r} (id {kid}) is given twice")
        if spec is not None:
            out[kid] = spec.encode(value)
            continue
        where = f"key {kid} (no type: raw hex)"
        raw = parse_bytes(value, where)
        if kid in store and len(raw) != store.size(kid):
            raise InvalidValueError(f"{where}: {len(raw)} bytes given, the key holds {store.size(kid)}")
        if not 1 <= len(raw) <= store.layout.max_value_size:
            raise InvalidValueError(f"{where}: {len(raw)} bytes; a value is 1..{store.layout.max_value_size}")
        out[kid] = raw
    return out


def seed(store: NamedStore, manifest: Manifest | None, values: Mapping) -> dict[int, bytes]:
    """Write values ({manifest name or id: value}) typed by manifest, with one put_many."""
    items = encode_values(store, values, manifest)
    store.put_many(items)
    return items


def initial_values(store: NamedStore, manifest: Manifest) -> dict[int, bytes]:
    """The manifest's keys the store does not hold yet, with their initial values."""
    return {k.id: k.initial() for k in manifest.keys if k.id not in store}


# --- links -----------------------------------------------------------------------------

def _link_prog_id(fd: int) -> int:
    info = _libbpf.bpf_link_info()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size))
    return info.prog_id


def _prog_exists(prog_id: int) -> bool:
    try:
        fd = lib.bpf_prog_get_fd_by_id(prog_id)
    except LibbpfError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    os.close(fd)
    return True


def unpin_link(pin: str, timeout: float = DETACH_TIMEOUT) -> bool:
    """Unpin a link and wait until its program is gone (so it no longer runs).

    The kernel drops a pinned link some time after its pin is removed; the
    link's program (loaded by attach() for this link alone) goes after the
    link detached it.  Returns False if the pin did not exist."""
    try:
        fd = lib.bpf_obj_get(os.fsencode(pin))
    except LibbpfError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    try:
        prog_id = _link_prog_id(fd)
        os.unlink(pin)
    finally:
        os.close(fd)
    end = time.monotonic() + timeout
    while _prog_exists(prog_id):
        if time.monotonic() > end:
            raise StoreStateError(f"{pin}: program id {prog_id} still exists {timeout:.0f} s after "
                                  "its link was unpinned (does another process hold it?)")
        time.sleep(0.002)
    return True


def links(store: NamedStore) -> list[dict]:
    """The store's recorded links: program, pin, object and whether the pin still exists."""
    out = []
    for prog, rec in sorted((store.state.get("links") or {}).items()):
        out.append({"program": prog, "pin": rec["pin"], "object": rec.get("object"),
                    "pinned": os.path.exists(rec["pin"])})
    return out


def _open_version(store: NamedStore, object_path: str | os.PathLike) -> BpfObject:
    """The object, checked against the store's layout, on the store's map, aimed at its target."""
    obj = BpfObject(object_path)
    try:
        if Layout.from_btf(obj.btf, str(object_path)) != store.layout:
            raise RolloutError(f"{object_path} was built with another store layout than store {store.name!r}")
        obj.map(DEFAULT_MAP).reuse_fd(store.map.fd)
        _configure(store, obj)
    except BaseException:
        obj.close()
        raise
    return obj


def _configure(store: NamedStore, obj: BpfObject) -> None:
    if TARGET_GLOBAL in obj.globals.names():
        obj.globals.set_int(TARGET_GLOBAL, store.state["target"]["pid"])


def _check_embedded(object_path, manifest: Manifest | None) -> None:
    embedded = read_object(object_path)
    if embedded is None or manifest is None:
        return
    mine = {k.id: (k.name, k.size) for k in manifest.keys}
    theirs = {k.id: (k.name, k.size) for k in embedded.keys}
    if mine != theirs:
        raise RolloutError(f"{object_path} declares other keys ({_keys_text(embedded)}) than the store's "
                           f"manifest {manifest.source} ({_keys_text(manifest)}): use rollout to change versions")


def _keys_text(m: Manifest) -> str:
    return ", ".join(f"{k.id}:{k.name}/{k.size}" for k in m.keys)


def attach(store: NamedStore, object_path: str | os.PathLike, *,
           programs: Iterable[str] | None = None) -> list[dict]:
    """Attach object_path's programs to the store's target, pinned (see the module doc)."""
    if store.state.get("links"):
        raise StoreStateError(f"store {store.name!r} already has programs attached "
                              f"({', '.join(sorted(store.state['links']))}): detach them first, "
                              "or roll out the new version")
    manifest = manifest_of(store)
    _check_embedded(object_path, manifest)
    if manifest is not None:
        missing = initial_values(store, manifest)
        if missing:
            store.put_many(missing)
    owner = link_dir(store)
    obj = _open_version(store, object_path)
    made: list[str] = []
    try:
        names = [p.name for p in obj.programs()] if programs is None else list(programs)
        for name in names:
            obj.program(name)                       # KeyError-like failure names it before load
        places = known_keys.resolve(obj, store)     # held by obj until it closes
        ids = {k.name: k.id for k in known_keys.declared(obj)}
        obj.load()
        os.makedirs(owner, mode=0o700, exist_ok=True)
        recorded = {n: {"pin": os.path.join(owner, n), "object": os.path.abspath(os.fspath(object_path))}
                    for n in names}
        for rec in recorded.values():
            if os.path.exists(rec["pin"]):
                raise StoreStateError(f"{rec['pin']} exists already (left by an earlier run?): "
                                      "remove it or run `uptrkv detach`")
        if places:
            store.hold_pinned(owner, {ids[n]: slot for n, slot in places.items()})
        store.update_state(links=recorded)          # first: a crash leaves a record to detach
        for name in names:
            with obj.program(name).attach() as link:
                link.pin(recorded[name]["pin"])
                made.append(recorded[name]["pin"])
    except BaseException:
        for pin in made:
            unpin_link(pin)
        if made or store.state.get("links"):
            store.update_state(links={})
        store.release_pinned(owner)
        obj.close()
        raise
    obj.close()
    return links(store)


def detach(store: NamedStore) -> list[dict]:
    """Unpin the store's links, wait until their programs are gone, release their holds."""
    gone = links(store)
    for rec in gone:
        unpin_link(rec["pin"])
    for owner in list(store.state.get("holds") or {}):   # every version's (a rollout cut short leaves two)
        store.release_pinned(owner)
    store.update_state(links={}, rollout=None)
    try:
        os.rmdir(link_dir(store))
    except OSError:
        pass
    return gone


def remove_links(state: dict) -> None:
    """Unpin the links a state file records and their directory (gc of a dead target's store)."""
    for rec in (state.get("links") or {}).values():
        try:
            os.unlink(rec["pin"])
        except FileNotFoundError:
            pass
    path = os.path.join(state.get("pin_root") or "", LINKS, bpffs_name(state.get("name") or ""))
    try:
        os.rmdir(path)
    except OSError:
        pass


def drop_map_pin(state: dict, root: str | os.PathLike | None = None) -> bool:
    """Unpin the store's map if it was pinned under pin_root/maps and no other store uses it
    (decided under the root's lock, so never under a store being made).

    (A map pinned by another loader, given to create as a path elsewhere, is left alone.)"""
    from .named import pin_in_use, root_lock
    mp = (state.get("map") or {}).get("pin")
    maps = os.path.join(state.get("pin_root") or "", "maps")
    if not mp or os.path.dirname(mp) != maps:
        return False
    with root_lock(root):
        if pin_in_use(mp, root, besides=state.get("name")):
            return False
        try:
            os.unlink(mp)
        except FileNotFoundError:
            return False
    return True


# --- rollout across processes ----------------------------------------------------------

def settle(store: NamedStore) -> str | None:
    """Bring the record of a rollout a killed process left (state "rollout") in line with
    the store, after open() repaired it: the manifest whose sizes the keys have is the one
    in force, and links whose pins are gone are dropped.  Returns what it did, or None."""
    r = store.state.get("rollout")
    if not r:
        return None
    new, old = Manifest.from_dict(r["manifest"]), manifest_of(store)
    live = {p: rec for p, rec in (store.state.get("links") or {}).items() if os.path.exists(rec["pin"])}
    resized = [k for k in new.keys if old is not None and k.id in old.by_id and old.by_id[k.id].size != k.size]
    if resized:
        forward = all(k.id in store and store.size(k.id) == k.size for k in resized)
    else:
        forward = any(rec.get("object") == r.get("object") for rec in live.values())
    in_force = new if forward or old is None else old
    store.update_state(manifest=in_force.to_dict(), links=live, rollout=None)
    return (f"an interrupted rollout to {r.get('object')} was settled: the manifest of "
            f"{'the new' if in_force is new else 'the old'} version is in force; attached: "
            f"{', '.join(sorted(live)) or 'nothing'}")


def plan(store: NamedStore, new_manifest: Manifest, *, readonly: bool = False) -> _rollout.Plan:
    """The rollout plan from the recorded manifest to new_manifest, with the space check
    (readonly=True for a store opened read-only: a dry run)."""
    old = manifest_of(store)
    if old is None:
        raise RolloutError(f"store {store.name!r} records no manifest: create it with one to roll out")
    return _rollout.plan(store, old, new_manifest)


class _PinnedLink:
    """A pinned link of the running version, as uptrkv.rollout handles a link."""

    def __init__(self, program_name: str, pin: str, after=None):
        self.program_name = program_name
        self.pin = pin
        self.after = after

    def close(self) -> None:
        unpin_link(self.pin)        # returns once the program is gone
        if self.after is not None:
            self.after()


class _PinnedVersion:
    """The running version's object as uptrkv.rollout sees it: the owner of its holds.

    Its programs were loaded by another process and cannot be attached again
    from here, so a switch that fails after the old links went leaves no
    version attached (the RolloutError says so)."""

    def __init__(self, path: str):
        self.path = path

    def __repr__(self) -> str:
        return f"pinned programs {self.path}"

    def program(self, name: str):
        raise RolloutError(f"program {name} was loaded by another process; it cannot be attached again")

    def close(self) -> None:
        pass


def rollout(store: NamedStore, new_object: str | os.PathLike, new_manifest: Manifest, *,
            programs: Iterable[str] | None = None) -> _rollout.Deployment:
    """Switch the store's pinned version to new_object (uptrkv.rollout.rollout, across processes).

    The running version is the store's pinned links and its recorded
    manifest.  On success the new links are pinned in place of the old ones,
    their known keys held in the state file, and new_manifest recorded."""
    old = manifest_of(store)
    if old is None:
        raise RolloutError(f"store {store.name!r} records no manifest: create it with one to roll out")
    recorded = store.state.get("links") or {}
    if not recorded:
        raise RolloutError(f"store {store.name!r} has no programs attached: use attach for a first version")
    store.reclaim()         # free space open() quarantined for a writer that died: usable again
    links_at = link_dir(store)
    old_owners = list(store.state.get("holds") or {})
    version = _PinnedVersion(links_at)
    # The holds of the pinned version (restored by open() for a PinnedOwner) pass to version,
    # which rollout() releases when it has detached the old links.  The state file keeps
    # them until the switch is over: a process killed midway leaves them held.
    for owner in old_owners:
        token = store.pinned_owner(owner)
        slots = store.release(token) if token is not None else {}
        if slots:
            store.hold(slots, version)
    left = [len(recorded)]

    def old_one_gone() -> None:
        # Once the last old program is gone, its places are free to move: the state file
        # stops holding them before the switch returns (the journal then rolls forward).
        left[0] -= 1
        if left[0] == 0:
            for owner in old_owners:
                store.release_pinned(owner)
            store.update_state(links={p: r for p, r in (store.state.get("links") or {}).items()
                                      if p not in recorded})

    current = _rollout.Deployment(version, [_PinnedLink(p, r["pin"], old_one_gone)
                                            for p, r in sorted(recorded.items())], old)
    generation = int(store.state.get("generation") or 0) + 1
    new_owner = os.path.join(links_at, f"g{generation}")        # the new version's holds
    mine = os.path.abspath(os.fspath(new_object))
    new_links: dict[str, dict] = {}

    def pin_new(links: list) -> None:
        # Recorded, then pinned, before the old version is detached: a process killed
        # from here on leaves the new version attached (and the old one too, until its
        # unpin), every pin listed in the state file for `uptrkv detach`, and the places
        # both versions resolved (known keys) held.  One state write for all of it.
        for o in {id(o): o for k in store.keys() for o in store.holders(k)}.values():
            if isinstance(o, BpfObject) and os.path.abspath(o.path) == mine:
                store.hold_pinned(new_owner, store.held_by(o), save=False)
        for link in links:
            pin = os.path.join(links_at, f"{link.program_name}-{generation}")
            new_links[link.program_name] = {"pin": pin, "object": mine}
        both = dict(recorded)
        both.update({f"{p}-{generation}": r for p, r in new_links.items()})
        store.update_state(links=both, generation=generation,
                           rollout={"object": mine, "manifest": new_manifest.to_dict()})
        os.makedirs(links_at, mode=0o700, exist_ok=True)
        for link in links:
            link.pin(new_links[link.program_name]["pin"])
        # The new version is attached for good: from here a repair rolls the move forward
        # (the old version's places stay held until it is gone).
        store.mark_switched()

    try:
        deployment = _rollout.rollout(store, current, new_object, new_manifest,
                                      configure=lambda obj: _configure(store, obj), programs=programs,
                                      on_attached=pin_new)
    except BaseException:
        for rec in new_links.values():          # attached and pinned, then the switch failed
            unpin_link(rec["pin"])
        store.release_pinned(new_owner)
        state_links = {p: r for p, r in recorded.items() if os.path.exists(r["pin"])}
        store.update_state(links=state_links, rollout=None)
        raise
    new_obj = deployment.obj
    try:
        store.update_state(links=new_links, manifest=new_manifest.to_dict(), rollout=None)
    finally:
        for link in deployment.links:
            link.close()                  # pinned: stays attached
        deployment.links = []
        new_obj.close()
    return deployment
