"""What the Python operations of the 8-byte get/put fast paths cost, side by side in one process.

KVStore.get/put (uptrkv/store.py) check the key, compare the cached entry
with the metadata page (one list index, one memoryview load) and then load
or store one aligned word.  This times each of those operations alone, and
the paths themselves, interleaved in a shuffled order for many rounds of a
short timing each, so that the sum of the parts can be set against the
whole.  The empty loop's time is subtracted; min and 10th percentile are
shown because a shared machine only ever adds time.

    PYTHONPATH=. python examples/python_floor.py [--rounds 301] [--calls 2000]
"""

from __future__ import annotations

import argparse
import random
import struct
import time

from uptrkv.loader import BpfObject
from uptrkv.objects import object_path
from uptrkv.store import KVStore
from uptrkv.support import choose_copy_path


class _Plain:
    def one(self, key):
        return None

    def two(self, key, value):
        return None


CASES = {
    "empty loop (subtracted)": "pass",
    "store.get(5), 8 B": "store.get(5)",
    "store.put(5, value), 8 B": "store.put(5, value)",
    "store.get_u64(5)": "store.get_u64(5)",
    "store.put_u64(5, 7)": "store.put_u64(5, 7)",
    "a bare method call, 1 argument": "plain.one(5)",
    "a bare method call, 2 arguments": "plain.two(5, value)",
    "key check: key.__class__ is int and key >= 0": "key.__class__ is int and key >= 0",
    "value check: value.__class__ in (bytes, bytearray)": "value.__class__ in kinds",
    "attribute load (store._fast)": "store._fast",
    "list index (cache[5])": "cache[5]",
    "tuple index (hit[4])": "hit[4]",
    "metadata entry load (memoryview 'I' item)": "entries[5]",
    "len(value) == 8": "len(value) == 8",
    "8-byte word load (memoryview 'Q' item)": "words[index]",
    "8-byte word store (memoryview 'Q' item)": "words[index] = 7",
    "int.from_bytes(value, 'little')": "from_bytes(value, 'little')",
    "x.to_bytes(8, 'little')": "x.to_bytes(8, 'little')",
    "get's fast path inline (no call, no key check)":
        "hit = cache[5]\n        if hit[0] == entries[5] and hit[3] == 8:\n"
        "            hit[4][hit[5]].to_bytes(8, 'little')",
    "put's fast path inline (no call, no checks of key and value type)":
        "hit = cache[5]\n        if hit[0] == entries[5] and len(value) == hit[3] and hit[5] >= 0:\n"
        "            hit[4][hit[5]] = from_bytes(value, 'little')",
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=301)
    ap.add_argument("--calls", type=int, default=2000, help="calls per timing")
    args = ap.parse_args(argv)
    with BpfObject(object_path("bench_get", choose_copy_path())) as host:
        host.load()
        with KVStore.create(host) as store:
            store.put_many({k: struct.pack("<Q", k) for k in range(256)})
            store.get(5)                      # the first get fills the cache
            hit = store._fast[5]
            assert hit is not None and hit[3] == 8
            env = dict(store=store, plain=_Plain(), value=struct.pack("<Q", 7), key=5, x=7,
                       kinds=(bytes, bytearray), cache=store._fast, hit=hit, entries=store._entries,
                       words=hit[4], index=hit[5], from_bytes=int.from_bytes)
            fns = {}
            for name, stmt in CASES.items():
                scope = dict(env)
                exec(f"def f(n):\n    for _ in range(n):\n        {stmt}\n", scope)
                fns[name] = scope["f"]
            raw: dict[str, list[float]] = {name: [] for name in CASES}
            rng = random.Random(11)
            for _ in range(args.rounds):
                order = list(CASES)
                rng.shuffle(order)
                for name in order:
                    t0 = time.perf_counter_ns()
                    fns[name](args.calls)
                    raw[name].append((time.perf_counter_ns() - t0) / args.calls)

    def q(xs, f):
        return sorted(xs)[int(f * (len(xs) - 1))]
    base = raw["empty loop (subtracted)"]
    print(f"{args.rounds} rounds of {args.calls} calls; ns per operation, the empty loop subtracted")
    print(f"| operation | min | 10th percentile | median |\n|---|---|---|---|")
    for name in CASES:
        sub = 0 if name == "empty loop (subtracted)" else 1
        print(f"| {name} | {min(raw[name]) - sub * min(base):.1f} | "
              f"{q(raw[name], .1) - sub * q(base, .1):.1f} | {q(raw[name], .5) - sub * q(base, .5):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
