"""Compare-and-swap on memory shared with BPF programs.

Python has no atomic read-modify-write on a buffer.  GCC's libatomic
(``libatomic.so.1``, Debian's libatomic1) exports ``__atomic_compare_exchange_8``,
a ``lock cmpxchg`` on x86-64: the instruction BPF's compare-and-swap is JITed
to.  The store uses it on metadata entries, the only words both sides change,
64 bits wide over the aligned pair of 32-bit entries holding one (the width
BPF uses too: 32-bit atomics need -mcpu=v3).  A leaf module.
"""

from __future__ import annotations

import ctypes
import sys

_SEQ_CST = 5
_M32 = 0xFFFFFFFF

try:
    _lib = ctypes.CDLL("libatomic.so.1")
except OSError as exc:  # pragma: no cover - depends on the machine
    raise ImportError(f"cannot load libatomic.so.1 ({exc}); install Debian's libatomic1") from None

# No argtypes: the callers pass ready ctypes objects, which is the cheapest call ctypes makes.
_cas8 = _lib.__atomic_compare_exchange_8
_cas8.restype = ctypes.c_bool


class Words32:
    """Compare-and-swap on the aligned 32-bit words of a buffer at ``address``.

    ``u64`` is a ``memoryview.cast("Q")`` of the same buffer (plain reads).
    """

    def __init__(self, address: int, u64: memoryview):
        if address % 8:
            raise ValueError(f"address {address:#x} is not 8-byte aligned")
        self._base = address
        self._u64 = u64
        self._expected = ctypes.c_uint64()
        self._expected_ref = ctypes.byref(self._expected)
        self._high = 32 if sys.byteorder == "little" else 0
        self._want: int | None = None

    def forget(self) -> None:
        """Start a fresh record for :meth:`swapped`."""
        self._want = None

    def swapped(self) -> bool:
        """Whether the last cas() since forget() swapped, read from what the CPU did.

        An exception (KeyboardInterrupt) raised as cas() returns loses its
        return value; the compare-and-swap leaves ``expected`` untouched on
        success and overwrites it with the differing word on failure.
        """
        return self._want is not None and self._expected.value == self._want

    def cas(self, index: int, old: int, new: int) -> bool:
        """Replace word ``index`` with new if it is old; retried while only its pair-mate changes."""
        pair = index >> 1
        shift = self._high if index & 1 else 32 - self._high
        mask = _M32 << shift
        address = ctypes.c_void_p(self._base + 8 * pair)
        while True:
            cur = self._u64[pair]
            if (cur >> shift) & _M32 != old:
                return False
            desired = ctypes.c_uint64((cur & ~mask) | (new << shift))
            # No call between these stores and _cas8 (no point where Python raises a
            # pending KeyboardInterrupt), so swapped() never sees a cas that did not run.
            self._want = cur
            self._expected.value = cur
            if _cas8(address, self._expected_ref, desired, _SEQ_CST, _SEQ_CST):
                return True
