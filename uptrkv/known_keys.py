"""Known keys: KV_KEY() keys whose place a program learns as constants at load.

``KV_KEY(name, id, type)`` gives each key a read-only global
``kv_known_<name>`` (``struct kv_known_key``) that clang keeps only when the
program uses ``KV_KNOWN(kv, name)``.  Before the object is loaded,
:func:`resolve` writes where the store holds each such key (the offset of its
page's uptr in ``struct kv_store_value`` and the offset in that page, see
``struct kv_known_key`` in kv_layout.h) into the object's ``.rodata``.  The kernel freezes ``.rodata`` at load and the
verifier folds both numbers, so an access costs the load of the page pointer
plus the access itself, like a struct field.

The program then relies on the key staying put: :func:`resolve` takes a hold
on the store (:meth:`KVStore.hold`) in the object's name, released when the
object closes.  While held, a key cannot be deleted or resized and
``compact()`` leaves it in place; a rollout loads the next version with new
constants (:func:`uptrkv.rollout.rollout` resolves them).
"""

from __future__ import annotations

from dataclasses import dataclass

from .allocator import Slot
from .errors import LayoutError, MissingKeyError
from .layout import Layout
from .loader import BpfObject
from .store import DEFAULT_MAP, KVStore

PREFIX = "kv_known_"
STRUCT = "kv_known_key"


@dataclass(frozen=True)
class KnownKey:
    """A known key an object uses: its KV_KEY() name, id and size."""

    name: str
    id: int
    size: int


def _record(obj: BpfObject):
    rec = obj.btf.struct(STRUCT)
    if rec is None:
        raise LayoutError(f"{obj.path} has no struct {STRUCT} in its BTF; rebuild it with this kv_store.h")
    for field in ("id", "size", "loc"):
        if field not in rec.members:
            raise LayoutError(f"{obj.path}: struct {STRUCT} lacks {field!r}")
    return rec


def location(slot: Slot, layout: Layout) -> int:
    """struct kv_known_key.loc of a value: its offset on page 0, else page field << 16 | offset."""
    if slot.page == 0:
        return slot.offset
    return layout.page_fields[slot.page] << 16 | slot.offset


def declared(obj: BpfObject) -> list[KnownKey]:
    """The known keys obj's programs use (read from its .rodata before load)."""
    names = [n for n in obj.globals.names() if n.startswith(PREFIX)]
    if not names:
        return []
    m = _record(obj).members
    keys = []
    for var in names:
        raw = obj.globals.read(var)

        def field(name):
            return int.from_bytes(raw[m[name].offset:m[name].offset + m[name].size], "little")
        keys.append(KnownKey(var[len(PREFIX):], field("id"), field("size")))
    return sorted(keys, key=lambda k: k.id)


def resolve(obj: BpfObject, store: KVStore, slots: dict[int, Slot] | None = None) -> dict[str, Slot]:
    """Write the place of every known key obj uses into its .rodata, and hold them.

    ``slots`` overrides the store's current slot of some keys (a rollout
    passes the staged place of a resized key).  Every key must exist in the
    store with the size its KV_KEY() type has.  The hold lasts until obj
    closes.  Returns name -> slot.
    """
    if obj.loaded:
        raise ValueError(f"{obj.path} is already loaded: resolve known keys before load()")
    keys = declared(obj)
    if not keys:
        return {}
    layout = Layout.from_btf(obj.btf, obj.path)
    if layout != store.layout:
        raise LayoutError(f"{obj.path} was built with another store layout than the store's")
    m = _record(obj).members
    slots = dict(slots or {})
    places: dict[str, Slot] = {}
    for k in keys:
        slot = slots.get(k.id)
        if slot is None:
            try:
                slot = store.slot(k.id)
            except MissingKeyError:
                raise MissingKeyError(
                    f"{obj.path} uses known key {k.name!r} (id {k.id}), which holds no value in the "
                    f"store: put it ({k.size} bytes) before loading") from None
        if slot.size != k.size:
            raise LayoutError(f"{obj.path} uses known key {k.name!r} (id {k.id}) as {k.size} bytes, "
                              f"the store holds {slot.size}: resize it or fix the KV_KEY() type")
        places[k.name] = slot
    for k in keys:
        obj.globals.write(PREFIX + k.name, location(places[k.name], layout).to_bytes(m["loc"].size, "little"),
                          m["loc"].offset)
    store.hold({k.id: places[k.name] for k in keys}, obj)
    obj.on_close(lambda: store.release(obj))
    return places


def load(obj: BpfObject, store: KVStore, *, map_name: str = DEFAULT_MAP,
         slots: dict[int, Slot] | None = None) -> BpfObject:
    """Load obj on store's map with its known keys resolved; the keys stay held until obj closes."""
    kv_map = obj.map(map_name)
    if store.pin_path:
        kv_map.reuse_pinned(store.pin_path)
    else:
        kv_map.reuse_fd(store.map.fd)
    resolve(obj, store, slots)
    try:
        obj.load()
    except BaseException:
        store.release(obj)
        raise
    return obj
