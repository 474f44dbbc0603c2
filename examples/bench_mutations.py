"""What lossless mutations cost, measured side by side in one run.

1. a grace period: the map-in-map update uptrkv uses vs membarrier(GLOBAL);
2. BPF get+put of 16/64-byte values with and without the sequence count
   (8-byte values, which need none, as the control);
3. Python put/get of 8- vs 16-byte values;
4. publishing 100 keys: publish_staged() of the same 100 replacements in a
   100-key and a 1024-key store (O(changed keys): both the same), and
   convert() of 100 keys in the same two stores, with its parts;
5. rollouts on a live target: how long both versions are attached and how
   long the converted keys are unavailable.

    python examples/bench_mutations.py [rounds]
"""

from __future__ import annotations

import ctypes
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from uptrkv.grace import GracePeriod
from uptrkv.loader import BpfObject
from uptrkv.manifest import load_manifest
from uptrkv.objects import object_path
from uptrkv.rollout import rollout, start
from uptrkv.store import KVStore
from uptrkv.support import check_kernel, choose_copy_path

EXAMPLES = Path(__file__).resolve().parent / "rollout"
SYS_MEMBARRIER = 324
MEMBARRIER_CMD_GLOBAL = 1
BUSY = "import os, time\nwhile True:\n    os.getppid()\n    time.sleep(0.0002)\n"


def med(xs):
    return statistics.median(xs)


def grace_periods(rounds: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    gp = GracePeriod()
    mim, mb = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        gp.wait()
        mim.append(time.perf_counter() - t)
        t = time.perf_counter()
        if libc.syscall(SYS_MEMBARRIER, MEMBARRIER_CMD_GLOBAL, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "membarrier")
        mb.append(time.perf_counter() - t)
    gp.close()
    print(f"grace period, {rounds} each, interleaved (ms): "
          f"map-in-map update median {med(mim) * 1e3:.2f} (min {min(mim) * 1e3:.2f}, max {max(mim) * 1e3:.2f}); "
          f"membarrier(GLOBAL) median {med(mb) * 1e3:.2f} (min {min(mb) * 1e3:.2f}, max {max(mb) * 1e3:.2f})")


def seqcount_bpf(copy_path: str, rounds: int) -> None:
    objs = {name: BpfObject(object_path(name, copy_path)).load() for name in ("bench_seq", "bench_seq_off")}
    stores = {name: KVStore.create(obj) for name, obj in objs.items()}
    n = 200_000
    results = {}
    try:
        for size in (8, 16, 64):
            for name, obj in objs.items():
                stores[name].put(size, bytes(size))
            per = {name: [] for name in objs}
            for _ in range(rounds):
                for name, obj in objs.items():
                    g = obj.globals
                    g.set_int("key", size)
                    g.set_int("size", size)
                    g.set_int("rounds", n)
                    obj.program("bench_seq").test_run()
                    assert g.get_int("errors") == 0
                    per[name].append(g.get_int("elapsed_ns") / n)
            results[size] = (med(per["bench_seq"]), med(per["bench_seq_off"]))
    finally:
        for s in stores.values():
            s.close()
        for o in objs.values():
            o.close()
    print(f"BPF get+put of one key, ns per pair ({copy_path} copy path, median of {rounds}, bpf_loop included):")
    for size, (on, off) in results.items():
        note = " (no sequence count: the control)" if size == 8 else ""
        print(f"  {size:2d} B: with sequence count {on:6.1f}, without {off:6.1f}, ratio {on / off:.2f}{note}")


def python_cost(obj: BpfObject, rounds: int) -> None:
    n = 20_000
    with KVStore.create(obj) as store:
        store.put(1, bytes(8))
        store.put(2, bytes(16))
        v8, v16 = b"x" * 8, b"y" * 16
        res = {k: [] for k in ("put8", "put16", "get8", "get16")}
        for _ in range(rounds):
            for name, fn in (("put8", lambda: store.put(1, v8)), ("put16", lambda: store.put(2, v16)),
                             ("get8", lambda: store.get(1)), ("get16", lambda: store.get(2))):
                t = time.perf_counter()
                for _ in range(n):
                    fn()
                res[name].append((time.perf_counter() - t) / n * 1e9)
    m = {k: med(v) for k, v in res.items()}
    print(f"Python, ns per call (median of {rounds}): put 8 B {m['put8']:.0f}, put 16 B {m['put16']:.0f} "
          f"({m['put16'] / m['put8']:.2f}x: compare-and-swap through libatomic); get 8 B {m['get8']:.0f}, "
          f"get 16 B {m['get16']:.0f} ({m['get16'] / m['get8']:.2f}x)")


def publish_cost(copy_path: str, rounds: int) -> None:
    """publish_staged() of the same 100 replacements in a 100-key and a 1024-key store,
    interleaved (two objects: one store per task and map)."""
    objs = [BpfObject(object_path("test_kv_ops", copy_path)).load() for _ in range(2)]
    stores = {100: KVStore.create(objs[0]), 1024: KVStore.create(objs[1])}
    staged = {100: [], 1024: []}
    try:
        for fill, store in stores.items():
            for k in range(fill):
                store.put(k, bytes(8))
        for r in range(rounds * 3):
            for fill, store in stores.items():
                store.reclaim()
                for k in range(100):
                    store.stage(k, (r + 1).to_bytes(8, "little"))
                t = time.perf_counter()
                store.publish_staged()
                staged[fill].append(time.perf_counter() - t)
        conv = {100: [], 1024: []}
        parts = {100: [], 1024: []}
        for r in range(rounds):
            size = 16 if r % 2 == 0 else 8
            for fill, store in stores.items():
                t = time.perf_counter()
                store.convert({k: size for k in range(100)})
                conv[fill].append(time.perf_counter() - t)
                parts[fill].append(store.last_convert)
    finally:
        for s in stores.values():
            s.close()
        for o in objs:
            o.close()
    print(f"publish 100 staged replacements (ms, median of {rounds * 3}, interleaved): in a 100-key store "
          f"{med(staged[100]) * 1e3:.3f}, in a 1024-key store {med(staged[1024]) * 1e3:.3f} "
          f"(ratio {med(staged[1024]) / med(staged[100]):.2f})")
    for fill in (100, 1024):
        p = parts[fill]
        print(f"convert 100 keys (8 <-> 16 B) in a {fill}-key store (ms, median of {rounds}): total "
              f"{med(conv[fill]) * 1e3:.2f}; unavailable {med(x.unavailable for x in p) * 1e3:.2f}, of which "
              f"grace period {med(x.grace for x in p) * 1e3:.2f} and copy+publish {med(x.publish for x in p) * 1e3:.2f}")
    work = {fill: med(x.unavailable - x.grace for x in parts[fill]) for fill in (100, 1024)}
    print(f"convert's own work in the window (unavailable minus the grace period), 1024-key / 100-key "
          f"store: {work[1024] * 1e3:.3f} / {work[100] * 1e3:.3f} ms (ratio {work[1024] / work[100]:.2f})")


def rollout_window(copy_path: str, rounds: int) -> None:
    target = subprocess.Popen([sys.executable, "-c", BUSY])
    manifests = {v: load_manifest(EXAMPLES / f"{v}.toml", object_path(f"rollout_{v}", copy_path))
                 for v in ("v1", "v2", "v3")}

    def configure(o):
        o.globals.set_int("target_tgid", target.pid)

    obj = BpfObject(object_path("rollout_v1", copy_path))
    configure(obj)
    obj.load()
    store = KVStore.create(obj, pid=target.pid)
    times = []
    try:
        current = start(store, obj, manifests["v1"])
        for i in range(rounds):
            for v in ("v2", "v3", "v1"):
                current = rollout(store, current, object_path(f"rollout_{v}", copy_path), manifests[v],
                                  configure=configure)
                if current.switch.keys:
                    times.append(current.switch)
        current.close()
    finally:
        store.close()
        target.kill()
        target.wait()
    both = [t.both_attached * 1e6 for t in times]
    unav = [t.unavailable * 1e3 for t in times]
    print(f"rollouts on a live target ({len(times)} switches with a converted key, v1 -> v2 -> v3 -> v1):")
    print(f"  both versions attached: median {med(both):.0f} us, max {max(both):.0f} us")
    print(f"  converted keys unavailable (-EAGAIN): median {med(unav):.2f} ms, max {max(unav):.2f} ms "
          f"(grace period median {med(t.grace for t in times) * 1e3:.2f} ms)")


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 9
    print(check_kernel())
    copy_path = choose_copy_path()
    grace_periods(rounds * 3)
    seqcount_bpf(copy_path, rounds)
    with BpfObject(object_path("test_kv_ops", copy_path)) as obj:
        obj.load()
        python_cost(obj, rounds)
    publish_cost(copy_path, rounds)
    rollout_window(copy_path, max(2, rounds // 3))
    return 0


if __name__ == "__main__":
    sys.exit(main())
