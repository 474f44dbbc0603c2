"""Open a named store as its writer and change it, to be killed midway.

    named_writer.py NAME OP [SEED]      (or main(NAME, OP, SEED) in a forked child)

The runtime root and bpffs root come from UPTRKV_ROOT and UPTRKV_BPFFS, the
kill point from UPTRKV_KILL_AT (uptrkv._killpoints).  Values follow the
test convention of test_crash_reader.bpf.c: one byte repeated, whose low 6
bits are the key.  OP "random" changes the store at random until killed.
"""

import random
import sys

from uptrkv.named_store import NamedStore


def val(key: int, gen: int, size: int) -> bytes:
    return bytes([((gen & 3) << 6) | (key & 63)]) * size


def run(store, op: str, rng: random.Random) -> None:
    if op == "put16":
        store.put(2, val(2, 1, 16))
    elif op == "put_new":
        store.put(30, val(30, 1, 16))
    elif op == "put_many":
        store.put_many({k: val(k, 1, 16) for k in range(31, 41)})
    elif op == "grow":
        for k in range(50, 60):          # 10 x 1000 bytes: pages 1..3 are added
            store.put(k, bytes([k]) * 1000)
    elif op == "delete":
        store.delete(3)
    elif op == "convert":
        store.convert({2: val(2, 1, 32), 6: val(6, 1, 24), 8: 8})
    elif op == "compact":
        for k in (5, 7, 9, 11):
            store.delete(k)
        store.compact()
    elif op == "shrink":
        for k in range(50, 60):
            store.delete(k)
        store.compact()
    elif op == "put6":
        store.put(6, b"python put value")
    elif op == "fill_convert":              # a conversion that cannot fit a full store
        store.convert({1: 4096})
    elif op == "stage":
        store.stage(2, val(2, 1, 16))
        store.stage(44, val(44, 1, 16))
    elif op == "random":
        while True:
            key = rng.randrange(1, 49)
            gen = rng.randrange(4)
            what = rng.random()
            present = key in store
            if what < 0.45:
                size = store.size(key) if present else rng.choice((8, 16, 24, 32))
                store.put(key, val(key, gen, size))
            elif what < 0.6 and present:
                store.delete(key)
            elif what < 0.75 and present:
                store.convert({key: val(key, gen, rng.choice((8, 16, 24, 32)))})
            elif what < 0.8:
                store.compact()
            elif what < 0.9:
                store.put_many({k: val(k, gen, store.size(k) if k in store else 16)
                                for k in rng.sample(range(1, 49), 5)})
            elif present and store.size(key) not in (4, 8):
                store.resize(key, store.size(key))   # same size: no change, exercises the check
    else:
        raise SystemExit(f"unknown op {op}")


def main(name: str, op: str, seed: int = 0) -> None:
    store = NamedStore.open(name)
    print("open", flush=True)                # the parent's clock for random kills starts here
    run(store, op, random.Random(seed))
    store.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0)
