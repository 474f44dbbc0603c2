"""Hot-path benchmark: 8-byte reads with random keys, store vs BPF maps, side by side.

Every variant runs in the same process, interleaved, ROUNDS times; the
table shows medians in ns per read and ratios against the store, measured
in this one run (the machines are shared: compare ratios, not absolutes).
"""

from __future__ import annotations

import statistics
import struct
import sys

from uptrkv.loader import BpfObject
from uptrkv.objects import object_path
from uptrkv.store import KVStore
from uptrkv.support import check_kernel, choose_copy_path

ITERS = 1 << 18
ROUNDS = 9
PROGRAMS = {
    "loop only (baseline)": "bench_base",
    "hash map lookup": "bench_hash_lookup",
    "array map lookup": "bench_array_lookup",
    "kv_store_get (lookup once per run)": "bench_kv_get",
    "task storage lookup + kv_store_get": "bench_kv_lookup_get",
}


def run_case(obj: BpfObject, nkeys: int, seed: int = 1) -> dict[str, float]:
    g = obj.globals
    g.set_int("key_mask", nkeys - 1)
    g.set_int("seed", seed)
    g.set_int("iters", ITERS)
    times: dict[str, list[float]] = {name: [] for name in PROGRAMS}
    for _ in range(ROUNDS):
        for name, prog in PROGRAMS.items():
            obj.program(prog).test_run()
            if g.get_int("errors"):
                raise RuntimeError(f"{prog}: {g.get_int('errors')} failed reads")
            times[name].append(g.get_int("elapsed_ns", signed=False) / ITERS)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> int:
    print(check_kernel())
    path = choose_copy_path()
    with BpfObject(object_path("bench_get", path)) as obj:
        obj.load()
        for k in range(1024):
            key, value = struct.pack("<I", k), struct.pack("<Q", k * 3)
            obj.map("bench_hash").update(key, value)
            obj.map("bench_array").update(key, value)
        with KVStore.create(obj) as store:
            for k in range(1024):
                store.put(k, struct.pack("<Q", k * 3))
            print(f"copy path: {path}; {ITERS} random 8-byte reads per run, median of {ROUNDS} runs\n")
            for nkeys in (256, 1024):
                pages = len({store.slot(k).page for k in range(nkeys)})
                res = run_case(obj, nkeys)
                base = res["loop only (baseline)"]
                kv = res["kv_store_get (lookup once per run)"] - base
                print(f"{nkeys} keys (values on {pages} data page{'s' if pages > 1 else ''}):")
                print(f"  {'variant':38} {'ns/read':>8} {'minus loop':>11} {'vs kv_store_get':>16}")
                for name, ns in res.items():
                    net = ns - base
                    ratio = "" if name.startswith("loop") else f"{net / kv:15.2f}x"
                    print(f"  {name:38} {ns:8.2f} {net:11.2f} {ratio:>16}")
                print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
