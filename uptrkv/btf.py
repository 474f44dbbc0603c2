"""Read types back from an object's BTF through libbpf's btf__ API.

Used to check the Python side against the C definitions (struct sizes,
member offsets, enum values), to find global variables in data sections, and
to read the kernel's own BTF (:func:`raw_btf`: does it know uptr fields?).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from . import _libbpf
from ._libbpf import LibbpfError, lib

KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_FWD = 1, 2, 3, 4, 5, 6, 7
KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 8, 9, 10, 11
KIND_FUNC, KIND_VAR, KIND_DATASEC, KIND_DECL_TAG, KIND_TYPE_TAG = 12, 14, 15, 17, 18
_MODIFIERS = {KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG}


@dataclass(frozen=True)
class Member:
    name: str
    offset: int      # bytes
    size: int        # bytes
    kind: int        # BTF kind after skipping typedefs and modifiers
    type_id: int


@dataclass(frozen=True)
class Struct:
    name: str
    size: int
    members: dict[str, Member]


class Btf:
    """A view of one object's BTF.  Valid while the owning object is open."""

    def __init__(self, ptr: int, owner: object):
        self._ptr = ptr
        self._owner = owner   # keeps the bpf_object (and so the BTF) alive

    def _type(self, type_id: int):
        t = lib.btf__type_by_id(self._ptr, type_id)
        if not t:
            raise KeyError(f"BTF type id {type_id} does not exist")
        return t

    @staticmethod
    def _kind(t) -> int:
        return (t.contents.info >> 24) & 0x1F

    @staticmethod
    def _vlen(t) -> int:
        return t.contents.info & 0xFFFF

    def _name(self, name_off: int) -> str:
        name = lib.btf__name_by_offset(self._ptr, name_off)
        return name.decode() if name else ""

    def _entries(self, t, struct_type):
        base = ctypes.addressof(t.contents) + ctypes.sizeof(_libbpf.btf_type)
        arr = (struct_type * self._vlen(t)).from_address(base)
        return list(arr)

    def find(self, name: str, kind: int) -> int | None:
        try:
            return lib.btf__find_by_name_kind(self._ptr, name.encode(), kind)
        except LibbpfError:
            return None

    def resolve(self, type_id: int) -> int:
        """Skip typedefs and modifiers."""
        while self._kind(self._type(type_id)) in _MODIFIERS:
            type_id = self._type(type_id).contents.size_or_type
        return type_id

    def size_of(self, type_id: int) -> int:
        return lib.btf__resolve_size(self._ptr, type_id)

    def kind_of(self, type_id: int) -> int:
        return self._kind(self._type(self.resolve(type_id)))

    def struct(self, name: str) -> Struct | None:
        type_id = self.find(name, KIND_STRUCT)
        if type_id is None:
            return None
        t = self._type(type_id)
        members = {}
        for m in self._entries(t, _libbpf.btf_member):
            kflag = t.contents.info >> 31
            bit_off = m.offset & 0xFFFFFF if kflag else m.offset
            mname = self._name(m.name_off)
            members[mname] = Member(mname, bit_off // 8, self.size_of(m.type),
                                    self.kind_of(m.type), m.type)
        return Struct(name, t.contents.size_or_type, members)

    def enum(self, name: str) -> dict[str, int] | None:
        type_id = self.find(name, KIND_ENUM)
        if type_id is None:
            return None
        t = self._type(type_id)
        return {self._name(e.name_off): e.val for e in self._entries(t, _libbpf.btf_enum)}

    def decl_tags(self, func: str) -> list[str]:
        """The btf_decl_tag strings on function ``func`` itself (not on its
        arguments), in BTF order; the kernel's selftests annotate programs so."""
        func_id = self.find(func, KIND_FUNC)
        if func_id is None:
            raise KeyError(f"no function {func!r} in this BTF")
        tags = []
        for type_id in range(1, lib.btf__type_cnt(self._ptr)):
            t = self._type(type_id)
            if self._kind(t) != KIND_DECL_TAG or t.contents.size_or_type != func_id:
                continue
            component = ctypes.c_int32.from_address(
                ctypes.addressof(t.contents) + ctypes.sizeof(_libbpf.btf_type)).value
            if component == -1:
                tags.append(self._name(t.contents.name_off))
        return tags

    def datasec(self, type_id: int) -> dict[str, tuple[int, int]]:
        """Variables of a data section: name -> (offset, size)."""
        t = self._type(type_id)
        if self._kind(t) != KIND_DATASEC:
            return {}
        out = {}
        for v in self._entries(t, _libbpf.btf_var_secinfo):
            var = self._type(v.type)
            out[self._name(var.contents.name_off)] = (v.offset, v.size)
        return out


class _KernelBtf:
    """Owns BTF loaded from the kernel (or a raw BTF file); frees it with the last Btf that uses it."""

    def __init__(self, ptr: int):
        self.ptr = ptr

    def __del__(self):
        if self.ptr:
            lib.btf__free(self.ptr)
            self.ptr = 0


def kernel_btf(btf_id: int) -> Btf:
    """The BTF object the kernel holds under btf_id (of a loaded map or program).

    How a map pinned by another loader (bpftool, a C agent) tells its layout.
    """
    ptr = lib.btf__load_from_kernel_by_id(btf_id)
    return Btf(ptr, _KernelBtf(ptr))


def raw_btf(path: str) -> Btf:
    """The BTF in a raw BTF file, such as the kernel's own /sys/kernel/btf/vmlinux."""
    ptr = lib.btf__parse_raw(str(path).encode())
    return Btf(ptr, _KernelBtf(ptr))
