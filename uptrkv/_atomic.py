"""Compare-and-swap on memory shared with BPF programs.

Python has no atomic read-modify-write on a buffer.  GCC's libatomic
(``libatomic.so.1``, Debian's libatomic1) exports ``__atomic_compare_exchange_8``,
a ``lock cmpxchg`` on x86-64: the instruction BPF's compare-and-swap is JITed
to.  The store uses it on metadata entries, the only words both sides change.
A leaf module: it imports nothing of the package.
"""

from __future__ import annotations

import ctypes
import sys

_SEQ_CST = 5

try:
    _lib = ctypes.CDLL("libatomic.so.1")
except OSError as exc:  # pragma: no cover - depends on the machine
    raise ImportError(f"cannot load libatomic.so.1 ({exc}); install Debian's libatomic1") from None

_cas8 = _lib.__atomic_compare_exchange_8
_cas8.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint64), ctypes.c_uint64, ctypes.c_int, ctypes.c_int]
_cas8.restype = ctypes.c_bool


def cas64(address: int, old: int, new: int) -> tuple[bool, int]:
    """Atomically replace the 8-byte word at address with new if it is old.

    Returns (swapped, the word seen).
    """
    seen = ctypes.c_uint64(old)
    ok = _cas8(address, ctypes.byref(seen), new, _SEQ_CST, _SEQ_CST)
    return ok, seen.value


def cas32(address: int, old: int, new: int) -> tuple[bool, int]:
    """Atomically replace the aligned 4-byte word at address with new if it is old.

    Done as a 64-bit compare-and-swap of the aligned pair holding it (the
    width BPF uses too); a change of the other half meanwhile is retried.
    Returns (swapped, the 32-bit word seen).
    """
    if address % 4:
        raise ValueError(f"address {address:#x} is not 4-byte aligned")
    base = address & ~7
    high = (address != base) == (sys.byteorder == "little")
    shift = 32 if high else 0
    word = ctypes.c_uint64.from_address(base)
    while True:
        cur = word.value
        half = (cur >> shift) & 0xFFFFFFFF
        if half != old:
            return False, half
        want = (cur & ~(0xFFFFFFFF << shift)) | ((new & 0xFFFFFFFF) << shift)
        ok, seen = cas64(base, cur, want)
        if ok:
            return True, old
        if (seen >> shift) & 0xFFFFFFFF != old:
            return False, (seen >> shift) & 0xFFFFFFFF
