"""Waiting for an RCU grace period from user space.

A non-sleepable BPF program runs inside an RCU read-side critical section.
Once a grace period has passed, every such program that was running when the
wait began has returned, so none still uses a metadata entry (or the bytes it
named) that user space changed before the wait.

The kernel offers this to user space as a side effect with a documented
purpose: an update of a map-in-map (``BPF_MAP_TYPE_ARRAY_OF_MAPS``) waits
for running non-sleepable BPF programs before returning ("so that userspace
knows that all non-sleepable programs that could be running use the new map
value", kernel/bpf/syscall.c, ``maybe_wait_bpf_programs``).  It does so on
any number of CPUs; ``membarrier(MEMBARRIER_CMD_GLOBAL)`` also calls
``synchronize_rcu()`` but skips it when only one CPU is online (where a
preempted program may still be inside its read-side section) and is refused
on nohz_full kernels.

Sleepable programs run under RCU Tasks Trace instead; nothing here waits for
them (the kernel deliberately does not either: that wait can take seconds).
"""

from __future__ import annotations

import ctypes
import os
import threading

from . import _libbpf
from ._libbpf import lib

BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_ARRAY_OF_MAPS = 12


class GracePeriod:
    """An array-of-maps with one slot; ``wait()`` rewrites the slot."""

    def __init__(self):
        self._inner = self._outer = -1
        self._inner = lib.bpf_map_create(BPF_MAP_TYPE_ARRAY, b"uptrkv_gp_in", 4, 4, 1, None)
        opts = _libbpf.bpf_map_create_opts(sz=ctypes.sizeof(_libbpf.bpf_map_create_opts),
                                           inner_map_fd=self._inner)
        self._outer = lib.bpf_map_create(BPF_MAP_TYPE_ARRAY_OF_MAPS, b"uptrkv_gp", 4, 4, 1,
                                         ctypes.byref(opts))
        self._key = ctypes.c_uint32(0)
        self._value = ctypes.c_uint32(self._inner)

    def wait(self) -> None:
        """Return once every non-sleepable BPF program running at the call has returned."""
        lib.bpf_map_update_elem(self._outer, ctypes.byref(self._key), ctypes.byref(self._value), 0)

    def close(self) -> None:
        for fd in (self._outer, self._inner):
            if fd >= 0:
                os.close(fd)
        self._inner = self._outer = -1

    def __del__(self):
        self.close()


_shared: GracePeriod | None = None
_lock = threading.Lock()


def grace_period() -> None:
    """Wait for one grace period (one pair of maps per process, created on first use)."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = GracePeriod()
        gp = _shared
    gp.wait()
