"""The store's layout, read from a BPF object's BTF rather than copied from C.

``bpf/kv_layout.h`` defines the layout once; every object that includes it
carries ``enum kv_layout``, ``struct kv_store_value`` and the page structs in
its BTF.  :meth:`Layout.from_btf` reads them and refuses an object that does
not match what this package can drive.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from .allocator import Slot
from .btf import KIND_PTR, Btf
from .errors import LayoutError

_ENUM_FIELDS = {
    "max_keys": "KV_MAX_KEYS",
    "page_size": "KV_PAGE_SIZE",
    "max_pages": "KV_MAX_PAGES",
    "max_value_size": "KV_MAX_VALUE_SIZE",
    "off_shift": "KV_META_OFF_SHIFT",
    "off_mask": "KV_META_OFF_MASK",
    "size_shift": "KV_META_SIZE_SHIFT",
    "size_mask": "KV_META_SIZE_MASK",
    "page_shift": "KV_META_PAGE_SHIFT",
    "page_mask": "KV_META_PAGE_MASK",
    "seq_shift": "KV_META_SEQ_SHIFT",
    "seq_mask": "KV_META_SEQ_MASK",
    "init_shift": "KV_META_INIT_SHIFT",
}


@dataclass(frozen=True)
class Layout:
    max_keys: int
    page_size: int
    max_pages: int
    max_value_size: int
    off_shift: int
    off_mask: int
    size_shift: int
    size_mask: int
    page_shift: int
    page_mask: int
    seq_shift: int
    seq_mask: int
    init_shift: int
    value_size: int                  # sizeof(struct kv_store_value)
    meta_field: int                  # offset of the meta uptr in it
    page_fields: tuple[int, ...]     # offsets of page0..pageN uptrs

    @classmethod
    def from_btf(cls, btf: Btf, source: str = "object") -> "Layout":
        enum = btf.enum("kv_layout")
        if enum is None:
            raise LayoutError(f"{source} has no enum kv_layout in its BTF; "
                              "was it built from bpf/kv_store.h with -g?")
        missing = [c for c in _ENUM_FIELDS.values() if c not in enum]
        if missing:
            raise LayoutError(f"{source}: enum kv_layout lacks {', '.join(missing)}")
        consts = {f: enum[c] for f, c in _ENUM_FIELDS.items()}

        value = btf.struct("kv_store_value")
        if value is None:
            raise LayoutError(f"{source} has no struct kv_store_value in its BTF")
        names = ["meta"] + [f"page{i}" for i in range(consts["max_pages"])]
        for name in names:
            m = value.members.get(name)
            if m is None or m.kind != KIND_PTR or m.size != 8:
                raise LayoutError(f"{source}: struct kv_store_value.{name} must be a 64-bit uptr pointer")
        for sname, want in (("kv_meta_page", consts["max_keys"] * 4), ("kv_data_page", consts["page_size"])):
            s = btf.struct(sname)
            if s is None:
                raise LayoutError(f"{source}: struct {sname} is missing or only declared in BTF "
                                  "(a uptr pointee must be referenced untagged; see kv_store.h)")
            if s.size != want:
                raise LayoutError(f"{source}: struct {sname} is {s.size} bytes, expected {want}")
        layout = cls(value_size=value.size, meta_field=value.members["meta"].offset,
                     page_fields=tuple(value.members[n].offset for n in names[1:]), **consts)
        layout._validate(source)
        return layout

    def _validate(self, source: str) -> None:
        if self.max_keys * 4 > self.page_size:
            raise LayoutError(f"{source}: {self.max_keys} 32-bit entries do not fit a metadata page")
        if self.size_mask + 1 < self.max_value_size or self.off_mask + 1 < self.page_size:
            raise LayoutError(f"{source}: metadata fields too narrow for the sizes they encode")
        if self.page_mask + 1 < self.max_pages:
            raise LayoutError(f"{source}: page field cannot name {self.max_pages} pages")
        fields = [(self.off_shift, self.off_mask), (self.size_shift, self.size_mask),
                  (self.page_shift, self.page_mask), (self.seq_shift, self.seq_mask),
                  (self.init_shift, 1)]
        bits = 0
        for shift, mask in fields:
            if bits & (mask << shift) or (mask << shift) >> 32:
                raise LayoutError(f"{source}: metadata entry fields overlap or exceed 32 bits")
            bits |= mask << shift

    @cached_property
    def init_bit(self) -> int:
        return 1 << self.init_shift

    @cached_property
    def seq_one(self) -> int:
        """The sequence count's lowest bit: set while a write is in progress."""
        return 1 << self.seq_shift

    @cached_property
    def seq_bits(self) -> int:
        return self.seq_mask << self.seq_shift

    @cached_property
    def reserved_bits(self) -> int:
        """Bits no valid entry sets."""
        used = (self.init_bit | self.seq_bits | (self.page_mask << self.page_shift)
                | (self.size_mask << self.size_shift) | (self.off_mask << self.off_shift))
        return 0xFFFFFFFF & ~used

    def seq_next(self, entry: int) -> int:
        """entry with its sequence count advanced by one complete write (mod 16)."""
        return (entry & ~self.seq_bits) | ((entry + 2 * self.seq_one) & self.seq_bits)

    def busy(self, entry: int) -> int:
        """The "not available yet" form of a published entry: BPF gets -EAGAIN."""
        return (entry & ~(self.init_bit | self.seq_bits)) | self.seq_one

    @staticmethod
    def is_atomic_size(size: int) -> bool:
        """4- and 8-byte values are single aligned accesses; others use the sequence count."""
        return size in (4, 8)

    def encode(self, slot: Slot) -> int:
        """Metadata entry for a value (sizes are stored minus one: 1..4096 fit)."""
        if not 0 <= slot.page < self.max_pages:
            raise ValueError(f"page {slot.page} outside 0..{self.max_pages - 1}")
        if not 1 <= slot.size <= self.max_value_size or slot.end > self.page_size or slot.offset < 0:
            raise ValueError(f"slot {slot} does not fit a {self.page_size}-byte page")
        return (self.init_bit | (slot.page << self.page_shift)
                | ((slot.size - 1) << self.size_shift) | (slot.offset << self.off_shift))

    def decode(self, entry: int) -> Slot | None:
        """The slot an entry names (its sequence count ignored), or None for an empty key."""
        if not entry & self.init_bit:
            return None
        return Slot((entry >> self.page_shift) & self.page_mask,
                    (entry >> self.off_shift) & self.off_mask,
                    ((entry >> self.size_shift) & self.size_mask) + 1)
