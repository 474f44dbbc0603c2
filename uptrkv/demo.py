"""The README's first command: a program on a real hook keeps its state in a store.

Loads ``demo_sys_enter``, creates a store for this thread, seeds the keys,
attaches the program to ``tp_btf/sys_enter`` for this process, makes some
syscalls, detaches, and prints what the program read and wrote.
"""

from __future__ import annotations

import os
import struct
import sys
from dataclasses import dataclass

from .loader import BpfObject
from .objects import object_path
from .store import KVStore
from .support import check_kernel, choose_copy_path

GETPPID_NR = 110  # x86-64


@dataclass(frozen=True)
class DemoKey:
    key: int
    name: str
    fmt: str          # struct format, or "16s" for text
    seed: object
    writer: str

    def encode(self, value) -> bytes:
        return struct.pack(self.fmt, value)

    def decode(self, raw: bytes):
        v = struct.unpack(self.fmt, raw)[0]
        return v.rstrip(b"\0").decode() if isinstance(v, bytes) else v


KEYS = [
    DemoKey(1, "syscalls", "<Q", 0, "BPF"),
    DemoKey(2, "last_nr", "<Q", 0, "BPF"),
    DemoKey(3, "watch_nr", "<I", GETPPID_NR, "user"),
    DemoKey(4, "watch_hits", "<Q", 0, "BPF"),
    DemoKey(5, "greeting", "16s", b"hello, uptr kv", "user"),
    DemoKey(6, "shout", "16s", b"", "BPF"),
]


def run(calls: int = 25, copy_path: str | None = None, out=sys.stdout) -> dict[str, object]:
    """Run the demo; return the values read back, by key name."""
    print(check_kernel(), file=out)
    path = choose_copy_path(copy_path)
    with BpfObject(object_path("demo_sys_enter", path)) as obj:
        obj.globals.set_int("target_tgid", os.getpid())
        obj.load()
        with KVStore.create(obj) as store:
            for k in KEYS:
                store.put(k.key, k.encode(k.seed))
            with obj.program("demo_sys_enter").attach():
                for _ in range(calls):
                    os.getppid()
            after = {k.name: k.decode(store.get(k.key)) for k in KEYS}
            slots = {k.name: store.slot(k.key) for k in KEYS}
    print(f"copy path: {path}; {calls} getppid() calls while attached to tp_btf/sys_enter "
          f"of pid {os.getpid()}\n", file=out)
    rows = [("key", "name", "size", "page:off", "seeded", "after", "written by")]
    for k in KEYS:
        s = slots[k.name]
        rows.append((str(k.key), k.name, str(s.size), f"{s.page}:{s.offset}",
                     repr(k.seed.rstrip(b"\0").decode() if isinstance(k.seed, bytes) else k.seed),
                     repr(after[k.name]), k.writer))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), file=out)
        if n == 0:
            print("  ".join("-" * w for w in widths), file=out)
    return after
