"""Torture: BPF writers in a live target on another CPU while Python changes the store.

The target process makes syscalls without pause; bpf/torture.h runs in each
of them (tp_btf/sys_enter), incrementing counters, updating a checksummed
32/40-byte value, tagging a replaced key with its version and writing an
8-byte value with equal halves.  It counts every write that returned 0, and
every inconsistency it sees, in an array map only BPF writes.  Meanwhile
this process puts, rewrites, resizes and deletes keys of its own, moves the
BPF-written keys (resize away and back, compact), reads the BPF-written
values, and rolls out v1 -> v2 -> v3 -> v1 ... repeatedly.

At the end: every counter in the store equals the number of increments BPF
saw succeed (no write lost across moves and rollouts), no checksum failed
(no key held another key's bytes), no 8-byte value was torn, no version saw
another version's replaced value, and this process's own keys hold exactly
what it wrote.

UPTRKV_TORTURE_SECONDS sizes the run (default 3); it always makes at least
MIN_ROLLOUTS rollouts.
"""

import os
import random
import struct
import time

from conftest import Target
from uptrkv.loader import BpfObject
from uptrkv.manifest import read_object
from uptrkv.objects import object_path
from uptrkv.rollout import rollout, start
from uptrkv.store import KVStore

SECONDS = float(os.environ.get("UPTRKV_TORTURE_SECONDS", "3"))
MIN_ROLLOUTS = 4
ROLLOUT_EVERY = 0.25          # seconds between rollouts
SPIN_LOOPS = 2000             # BPF: empty loop iterations between a get and its put, 1 run in 8
VERSIONS = ("v1", "v2", "v3")
HITS, GROWN, MULTI, REPLACED, TORN = 1, 2, 4, 5, 6
OWN_KEYS = range(100, 164)    # keys only this process writes
(T_HITS, T_GROWN, T_MULTI, T_REPLACED, T_TORN_PUT, T_BAD_SUM, T_TORN, T_FOREIGN, T_EAGAIN,
 T_RUNS) = range(10)
MASK = (1 << 64) - 1
MIX = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9)
# Syscalls without pause, one CPU's worth.
BUSY = "import os\nwhile True:\n    os.getppid()\n"


def mix(i, seq, a):
    return ((i * MIX[0]) ^ (seq * MIX[1]) ^ (a * MIX[2])) & MASK


def multi_value(size):
    return struct.pack("<4Q", MULTI, 0, 0, mix(MULTI, 0, 0)) + bytes(size - 32)


def own_value(key, gen, size):
    """Bytes that name their key and generation, so foreign bytes show."""
    rnd = random.Random(key * 1_000_003 + gen)
    return bytes(rnd.randrange(256) for _ in range(size))


def read_counts(handle):
    return [int.from_bytes(handle.lookup(struct.pack("I", i)), "little") for i in range(10)]


def test_no_write_lost_under_live_load(kernel, copy_path, other_cpu, bpffs):
    seed = int(os.environ.get("UPTRKV_TORTURE_SEED", str(time.time_ns() % 1_000_000)))
    rng = random.Random(seed)
    paths = {v: object_path(f"torture_{v}", copy_path) for v in VERSIONS}
    manifests = {v: read_object(paths[v]) for v in VERSIONS}
    target = Target(other_cpu, BUSY)
    counts = None
    report = {"seed": seed, "rollouts": 0, "moves": 0, "compacted": 0, "py_torn": 0, "py_bad_sum": 0,
              "multi_reads": 0, "own_ops": 0}

    def configure(obj):
        obj.globals.set_int("target_tgid", target.pid)
        obj.globals.set_int("spin_loops", SPIN_LOOPS)
        if counts is not None:
            obj.map("counts").reuse_fd(counts.fd)

    obj = BpfObject(paths["v1"])
    configure(obj)
    obj.load()
    counts = obj.map("counts").handle()
    store = KVStore.create(obj, pid=target.pid, pin_path=os.path.join(bpffs, "torture"))
    own: dict[int, bytes] = {}
    gen = 0
    try:
        # Keys of this process first, low in the page, so deleting them leaves holes
        # under the BPF-written keys and compact() moves those.
        for key in OWN_KEYS[:24]:
            gen += 1
            own[key] = own_value(key, gen, rng.choice([8, 16, 24, 40, 64]))
            store.put(key, own[key])
        store.put(MULTI, multi_value(32))
        current = start(store, obj, manifests["v1"])
        version = 0
        t_end = time.monotonic() + SECONDS
        next_rollout = time.monotonic() + ROLLOUT_EVERY
        while time.monotonic() < t_end or report["rollouts"] < MIN_ROLLOUTS:
            if time.monotonic() >= next_rollout:
                version = (version + 1) % len(VERSIONS)
                v = VERSIONS[version]
                current = rollout(store, current, paths[v], manifests[v], configure=configure)
                report["rollouts"] += 1
                next_rollout = time.monotonic() + ROLLOUT_EVERY
                continue
            op = rng.randrange(10)
            report["own_ops"] += 1
            if op == 0 and len(own) < len(OWN_KEYS):                    # new key
                key = rng.choice([k for k in OWN_KEYS if k not in own])
                gen += 1
                own[key] = own_value(key, gen, rng.randrange(1, 300))
                store.put(key, own[key])
            elif op == 1 and own:                                       # delete
                key = rng.choice(sorted(own))
                store.delete(key)
                del own[key]
            elif op == 2 and own:                                       # rewrite
                key = rng.choice(sorted(own))
                gen += 1
                own[key] = own_value(key, gen, len(own[key]))
                store.put(key, own[key])
            elif op == 3 and own:                                       # resize
                key = rng.choice(sorted(own))
                size = rng.randrange(1, 300)
                store.resize(key, size)
                own[key] = own[key][:size] + bytes(max(0, size - len(own[key])))
            elif op == 4:
                report["compacted"] += store.compact()
            elif op == 5:                                               # move a BPF-written key and back
                key = rng.choice([HITS, GROWN, MULTI])
                size = store.size(key)
                store.resize(key, size + 8 * rng.randrange(1, 40))
                store.resize(key, size)
                report["moves"] += 2
            elif op == 6:                                               # the 8-byte value both sides write
                x = rng.randrange(1 << 32)
                store.put(TORN, struct.pack("<II", x, x))
            else:                                                       # read what BPF writes
                lo, hi = struct.unpack("<II", store.get(TORN))
                report["py_torn"] += lo != hi
                i, seq, a, s = struct.unpack_from("<4Q", store.get(MULTI))
                report["py_bad_sum"] += i != MULTI or s != mix(i, seq, a)
                report["multi_reads"] += 1
            if rng.randrange(20) == 0:
                assert {k: store.get(k) for k in own} == own
                assert store.verify() == []
        current.close()                        # detach: the counts hold still from here
        final = read_counts(counts)
        hits = int.from_bytes(store.get(HITS), "little")
        grown = int.from_bytes(store.get(GROWN)[:8], "little")
        i, seq, a, s = struct.unpack_from("<4Q", store.get(MULTI))
        own_now = {k: store.get(k) for k in own}
        problems = store.verify()
    finally:
        store.close()
        target.kill()
        counts.close()
    report.update(increments_counted=final[T_HITS], hits_in_store=hits, grown_counted=final[T_GROWN],
                  grown_in_store=grown, multi_counted=final[T_MULTI], multi_seq=seq,
                  eagain=final[T_EAGAIN], runs=final[T_RUNS], bpf_bad_sum=final[T_BAD_SUM],
                  bpf_torn=final[T_TORN], bpf_foreign=final[T_FOREIGN])
    print(f"\ntorture ({copy_path}, {SECONDS} s): {report}")
    assert final[T_RUNS] > 100 and final[T_HITS] > 100          # BPF really ran meanwhile
    assert report["rollouts"] >= MIN_ROLLOUTS
    assert hits == final[T_HITS]
    assert grown == final[T_GROWN]
    assert seq == final[T_MULTI] and i == MULTI and s == mix(i, seq, a)
    assert final[T_BAD_SUM] == 0 and report["py_bad_sum"] == 0
    assert final[T_TORN] == 0 and report["py_torn"] == 0
    assert final[T_FOREIGN] == 0
    assert own_now == own
    assert problems == []
