"""Holds: keys a loaded program resolved at load (known keys) stay where they are.

While held, a key cannot be deleted, resized or converted, compact() leaves
it, and space freed under it (a BPF delete) stays quarantined until the
last hold goes.
"""

from __future__ import annotations

from ..allocator import Slot
from ..errors import KeyHeldError


class HoldsMixin:
    """hold/release and reserved places of a KVStore (see uptrkv.store)."""

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

    def held_by(self, owner: object) -> dict[int, Slot]:
        """The keys owner holds, with their slots (empty if none)."""
        entry = self._holds.get(id(owner))
        return dict(entry[1]) if entry is not None else {}

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
