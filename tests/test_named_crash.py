"""A writer killed with SIGKILL at any step leaves a store the next open() repairs.

The target runs on another CPU with test_crash_reader attached: at every
syscall it reads keys 1..48 and counts reads that are torn or hold another
key's bytes.  A writer process (forked from this one: see
conftest.Forked) opens the named store and changes it until
it kills itself at a kill point (deterministic: every step its operation
reaches, found by a first run that logs them) or is killed at a random time.
Then this process opens the store and checks:

- open() repaired it: verify() finds nothing;
- every value is whole (one byte repeated, the key in its low bits);
- no space leaked: after a grace period, the bytes in use are the live values';
- the store still works (a put on a new page, a compact);
- BPF read no bad value at any time, before, during or after the crash.
"""

from __future__ import annotations

import os
import random
import signal
import struct
import time

import pytest

from conftest import Forked, Target, wait_for
from helpers import named_writer
from uptrkv.loader import BpfObject
from uptrkv.named_store import NamedStore
from uptrkv.objects import object_path

OPS = ["put16", "put_new", "put_many", "grow", "delete", "convert", "compact", "shrink", "stage"]


def val(key: int, gen: int, size: int) -> bytes:
    return bytes([((gen & 3) << 6) | (key & 63)]) * size


def seed() -> dict[int, bytes]:
    """Keys 1..24: odd ones 8 bytes, even ones 16 (seqlocked, logged when written in place)."""
    return {k: val(k, 0, 8 if k % 2 else 16) for k in range(1, 25)}


class Rig:
    """The reader program on a running target, and named stores for it."""

    def __init__(self, copy_path, cpu):
        self.target = Target(cpu=cpu)
        self.obj = BpfObject(object_path("test_crash_reader", copy_path))
        self.obj.globals.set_int("target_tgid", self.target.pid)
        self.obj.load()
        self.link = self.obj.program("crash_reader").attach()
        self.g = self.obj.globals

    def counters(self) -> dict[str, int]:
        return {n: self.g.get_int(n, signed=False) for n in ("runs", "good", "bad", "again", "missing")}

    def fresh(self, name: str, extra: dict[int, bytes] | None = None) -> None:
        s = NamedStore.create(self.obj, name, pid=self.target.pid)
        s.put_many({**seed(), **(extra or {})})
        s.close()

    def writer(self, name: str, op: str, *, kill_at: str | None = None, log: str | None = None,
               seed_: int = 0) -> Forked:
        return Forked(named_writer.main, name, op, seed_, kill_at=kill_at, kill_log=log)

    def check(self, name: str, what: str) -> list[str]:
        """Open (repairing), check the invariants, prove the store works; returns the repairs."""
        runs = self.counters()["runs"]
        s = NamedStore.open(name)
        try:
            repairs = list(s.repairs)
            assert s.verify() == [], f"{what}: {s.verify()}"
            for key in s.keys():
                data = s.get(key)
                if key < 50:
                    assert data == bytes([data[0]]) * len(data) and data[0] & 63 == key, \
                        f"{what}: key {key} holds {data.hex()}"
                else:
                    assert data == bytes([key]) * 1000, f"{what}: key {key} is not whole"
            s.reclaim()
            alloc = s.allocator()
            live = sum(s.size(k) for k in s.keys())
            assert alloc.used_bytes == live, f"{what}: {alloc.used_bytes} bytes in use, values hold {live}"
            assert [f for f in os.listdir(s.path) if f.startswith(".")] == []
            s.put(60, bytes([60]) * 3000)              # new space, a new page if needed
            s.delete(60)
            s.compact()
            assert s.verify() == []
        finally:
            s.close()
        assert wait_for(lambda: self.counters()["runs"] > runs + 3), "BPF stopped reading"
        c = self.counters()
        assert c["bad"] == 0, (f"{what}: BPF read a bad value: key {self.g.get_int('bad_key')} "
                               f"byte {self.g.get_int('bad_byte'):#x} size {self.g.get_int('bad_size')}; {c}")
        return repairs

    def destroy(self, name: str) -> None:
        with NamedStore.open(name) as s:
            s.destroy()

    def close(self) -> None:
        self.link.close()
        self.obj.close()
        self.target.kill()


@pytest.fixture(scope="module")
def rig_module(kernel, copy_path):
    cpus = sorted(os.sched_getaffinity(0))
    rig = Rig(copy_path, cpus[-1] if len(cpus) > 1 else None)
    yield rig
    rig.close()


@pytest.fixture
def rig(rig_module, named_roots):
    yield rig_module
    # a failed test may leave its store: the target's element goes, so the next test can create one
    fd = os.pidfd_open(rig_module.target.pid)
    try:
        rig_module.obj.map("kv_store_map").delete(struct.pack("i", fd))
    finally:
        os.close(fd)


def steps_of(rig: Rig, op: str, tmp_path) -> list[str]:
    """Every kill point the operation reaches, each with its count (STEP:N), in order."""
    rig.fresh("steps", extra={50 + i: bytes([50 + i]) * 1000 for i in range(10)} if op == "shrink" else None)
    log = tmp_path / f"{op}.log"
    p = rig.writer("steps", op, log=str(log))
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    rig.destroy("steps")
    seen: dict[str, int] = {}
    out = []
    for step in log.read_text().split():
        seen[step] = seen.get(step, 0) + 1
        if seen[step] <= 3:                            # the first three times of a repeated step
            out.append(f"{step}:{seen[step]}")
    return out


# Every step runs on the stock path only: the repair is user space's, the same on both
# paths, and the dynptr path's reads are checked by the random kills.
@pytest.mark.copy_paths("stock")
@pytest.mark.parametrize("op", OPS)
def test_killed_at_every_step(rig, copy_path, op, tmp_path):
    steps = steps_of(rig, op, tmp_path)
    assert steps, f"{op} reaches no kill point"
    extra = {50 + i: bytes([50 + i]) * 1000 for i in range(10)} if op == "shrink" else None
    outcomes = []
    for i, step in enumerate(steps):
        name = f"k{i}"
        rig.fresh(name, extra)
        p = rig.writer(name, op, kill_at=step)
        _, err = p.communicate(timeout=120)
        assert p.returncode == -signal.SIGKILL, f"{op} at {step}: exited {p.returncode}, not killed\n{err}"
        repairs = rig.check(name, f"{op} killed at {step}")
        outcomes.append((step, repairs))
        rig.destroy(name)
    print(f"{op}: {len(steps)} kill points: " +
          "; ".join(f"{s} -> {len(r)} repair(s)" for s, r in outcomes))


def test_killed_while_repairing(rig):
    """A writer killed amid a roll-forward leaves a journal the next open() finishes."""
    rig.fresh("again")
    p = rig.writer("again", "convert", kill_at="convert.placed")
    p.communicate(timeout=120)
    assert p.returncode == -signal.SIGKILL
    p = rig.writer("again", "put_new", kill_at="repair.forward:2")     # inside open()'s repair
    _, err = p.communicate(timeout=120)
    assert p.returncode == -signal.SIGKILL, err
    repairs = rig.check("again", "killed while repairing")
    assert any("rolled forward" in r for r in repairs), repairs
    with NamedStore.open("again") as s:
        assert s.get(2) == val(2, 1, 32) and s.get(6) == val(6, 1, 24) and s.get(8) == val(8, 0, 8)
        s.destroy()


def test_killed_at_random_times(rig):
    rng = random.Random(int(os.environ.get("UPTRKV_CRASH_SEED", "1")))
    rounds = int(os.environ.get("UPTRKV_CRASH_ROUNDS", "25"))
    rig.fresh("random")
    repaired = 0
    for i in range(rounds):
        with rig.writer("random", "random", seed_=rng.randrange(1 << 30)) as p:
            if p.readline().strip() != "open":         # repaired and running
                raise AssertionError(f"the random writer did not open the store: {p.communicate()}")
            time.sleep(rng.uniform(0.02, 0.5))         # killed amid its changes
            if p.poll() is not None:
                raise AssertionError(f"the random writer stopped by itself: {p.communicate()}")
            p.kill()
            p.communicate()
        repaired += bool(rig.check("random", f"random round {i}"))
    rig.destroy("random")
    print(f"{rounds} random kills, {repaired} needed a repair")


def test_a_conversion_that_no_longer_fits_is_rolled_back(rig):
    """A writer killed inside convert({1: 4096}) on a full store: rolling forward cannot
    place the value, so open() gives key 1 its old value back instead of failing for ever."""
    big = {50 + i: bytes([50 + i]) * 1000 for i in range(31)}          # fills all 8 pages
    rig.fresh("full", big)
    p = rig.writer("full", "fill_convert", kill_at="convert.unavailable:1")
    _, err = p.communicate(timeout=120)
    assert p.returncode == -signal.SIGKILL, err
    runs = rig.counters()["runs"]
    with NamedStore.open("full") as s:
        assert any("no longer fits" in r for r in s.repairs), s.repairs
        assert s.get(1) == val(1, 0, 8) and s.verify() == []
        # BPF counts a run only while the target has a store: wait before destroying it
        assert wait_for(lambda: rig.counters()["runs"] > runs + 3), "BPF stopped reading"
        s.destroy()
    assert rig.counters()["bad"] == 0
