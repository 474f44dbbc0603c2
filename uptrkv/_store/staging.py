"""Staging: write a value now into fresh space, publish it later with one entry store."""

from __future__ import annotations

from .. import _killpoints as _kp
from ..allocator import Slot
from ..errors import InvalidValueError
from .values import as_bytes


class StagingMixin:
    """stage/publish_staged/discard_staged of a KVStore (see uptrkv.store)."""

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
