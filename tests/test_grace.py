"""What a grace period guarantees, shown with a deliberately slow BPF writer.

bpf/test_grace.bpf.c reads a key's entry, spins for milliseconds, then
writes where the entry pointed: kv_store_put's nanosecond window between
reading the entry and storing, stretched so that user space can act inside
it.  Each test checks that the writer really was in flight when user space
acted (BPF timestamps against CLOCK_MONOTONIC), so none can pass vacuously.
"""

import struct
import time

import pytest

from conftest import Target
from uptrkv.grace import GracePeriod
from uptrkv.loader import BpfObject
from uptrkv.objects import object_path
from uptrkv.store import KVStore

SPIN = 1 << 23                       # bpf_loop's maximum: several ms per run on the host
WINDOW_NS = 100_000_000              # how long the writer stays in flight, whatever the machine:
                                     # user space must act inside it even on a loaded host
VALUE = 0x5AFE_C0DE_0000_0001


class Slow:
    def __init__(self, obj):
        self.g = obj.globals

    def arm(self, key: int, value: int = VALUE):
        self.g.set_int("slow_key", key)
        self.g.set_int("slow_value", value & (2 ** 63 - 1))
        self.g.set_int("armed", 1)

    def wait_started(self, timeout=10.0):
        """Poll without sleeping: the run must still be spinning when we return."""
        end = time.monotonic() + timeout
        while self.g.get_int("started") == 0:
            assert time.monotonic() < end, "the slow writer never ran"
        return time.monotonic_ns()

    def in_flight_at(self, t_ns: int) -> bool:
        return self.g.get_int("t_start") <= t_ns < self.g.get_int("t_end", signed=False)

    def wait_finished(self, timeout=30.0):
        end = time.monotonic() + timeout
        while self.g.get_int("finished") == 0:
            assert time.monotonic() < end, "the slow writer never finished"
            time.sleep(0.001)


def calibrate(obj, pid: int) -> None:
    """Time one round of the spin here and set `rounds` so that a run lasts WINDOW_NS."""
    slow = Slow(obj)
    with KVStore.create(obj, pid=pid) as store:
        store.put(1, bytes(8))
        slow.arm(1)
        slow.wait_finished()
        one = slow.g.get_int("t_end", signed=False) - slow.g.get_int("t_start")
    rounds = min(64, max(1, -(-WINDOW_NS // max(one, 1))))
    slow.g.set_int("rounds", rounds)
    slow.g.set_int("started", 0)
    slow.g.set_int("finished", 0)


@pytest.fixture
def slow_env(kernel, copy_path, other_cpu):
    target = Target(other_cpu)
    obj = BpfObject(object_path("test_grace", copy_path))
    obj.globals.set_int("target_tgid", target.pid)
    obj.globals.set_int("spin", SPIN)
    obj.load()
    link = obj.program("slow_put").attach()
    calibrate(obj, target.pid)
    store = KVStore.create(obj, pid=target.pid)
    try:
        yield store, Slow(obj)
    finally:
        link.close()
        store.close()
        obj.close()
        target.kill()


def test_grace_period_waits_for_a_running_program(slow_env):
    store, slow = slow_env
    store.put(1, bytes(8))
    gp = GracePeriod()
    try:
        slow.arm(1)
        t0 = slow.wait_started()
        gp.wait()
        t1 = time.monotonic_ns()
    finally:
        gp.close()
    assert slow.in_flight_at(t0), "the writer had finished before the grace period began"
    assert slow.g.get_int("finished") == 1
    assert slow.g.get_int("t_end", signed=False) <= t1       # it returned before wait() did


def test_a_move_keeps_a_write_in_flight(slow_env):
    store, slow = slow_env
    store.put(1, bytes(8))
    store.put(2, b"neighbor")                  # right after key 1: growing must move it
    old = store.slot(1)
    slow.arm(1)
    t0 = slow.wait_started()
    before = store.grace_periods
    new = store.resize(1, 16)
    assert slow.in_flight_at(t0), "the writer had finished before the move began"
    assert (new.page, new.offset) != (old.page, old.offset)
    assert store.grace_periods == before + 1
    assert store.get(1) == struct.pack("<Q", VALUE & (2 ** 63 - 1)) + bytes(8)
    assert store.get(2) == b"neighbor"


def test_freed_space_is_not_reused_while_a_write_is_in_flight(slow_env):
    store, slow = slow_env
    store.put(1, bytes(8))
    for key in range(2, 10):
        store.put(key, b"%08d" % key)
    slow.arm(1)
    t0 = slow.wait_started()
    store.delete(1)
    store.put(20, b"NEWVALUE")                 # first fit would be key 1's old bytes
    t1 = time.monotonic_ns()
    slow.wait_finished()
    assert slow.in_flight_at(t0) and slow.in_flight_at(t1), \
        "the writer had finished before the delete and put"
    assert store.get(20) == b"NEWVALUE"
    for key in range(2, 10):
        assert store.get(key) == b"%08d" % key
    assert store.verify() == []
