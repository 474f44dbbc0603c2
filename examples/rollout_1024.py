"""Time a rollout of a store holding all 1024 keys.

Version A: keys 0..1023 of 8 bytes.  Version B drops keys 0..99, grows keys
100..199 to 16 bytes and keeps the rest.  Both versions run demo_sys_enter
(which declares no KV_KEY manifest), so the timing is the store work plus
open, load (verifier) and attach of a real tp_btf program.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from uptrkv.loader import BpfObject
from uptrkv.manifest import parse_manifest
from uptrkv.objects import object_path
from uptrkv.rollout import plan, rollout, start
from uptrkv.store import KVStore
from uptrkv.support import check_kernel, choose_copy_path

ROUNDS = 5


def manifest(sizes: dict[int, int], name: str):
    text = "".join(f"[[key]]\nid = {k}\nname = \"k{k}\"\nsize = {s}\n\n" for k, s in sorted(sizes.items()))
    return parse_manifest(text, name)


def main() -> int:
    print(check_kernel())
    path = object_path("demo_sys_enter", choose_copy_path())
    a = manifest({k: 8 for k in range(1024)}, "A (1024 keys x 8 B)")
    b = manifest({k: (16 if k < 200 else 8) for k in range(100, 1024)}, "B (0..99 dropped, 100..199 -> 16 B)")

    def configure(obj):
        obj.globals.set_int("target_tgid", os.getpid())

    switch_ms, plan_ms = [], []
    for _ in range(ROUNDS):
        obj = BpfObject(path)
        configure(obj)
        obj.load()
        with KVStore.create(obj) as store:
            current = start(store, obj, a)
            t0 = time.perf_counter()
            the_plan = plan(store, a, b)
            plan_ms.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            current = rollout(store, current, path, b, configure=configure)
            switch_ms.append((time.perf_counter() - t0) * 1000)
            assert len(store) == 924 and store.size(150) == 16
            current.close()
    counts = {kind: len(getattr(the_plan, kind)) for kind in ("kept", "resized", "removed", "added")}
    print(f"plan: {counts}; {the_plan.bytes_added} bytes added, {the_plan.bytes_converted} converted, pages {the_plan.pages_before} -> "
          f"{the_plan.pages_during} during the switch")
    print(f"dry-run plan of a 1024-key store: median {statistics.median(plan_ms):.1f} ms over {ROUNDS} runs")
    print(f"rollout of a 1024-key store (plan, stage, open, load, attach, switch): "
          f"median {statistics.median(switch_ms):.1f} ms, min {min(switch_ms):.1f} ms over {ROUNDS} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
