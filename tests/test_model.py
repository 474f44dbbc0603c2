"""Model-based test: random sequences of store and BPF operations against a dict.

hypothesis drives a KVStore and the BPF-side API (test_kv_ops through
BPF_PROG_TEST_RUN) with put, delete, resize, compact, stage, publish,
discard, reclaim, BPF put and BPF delete, and checks after every step that
the store, BPF's view and a plain dict model agree; a failure is shrunk to a
minimal sequence.  UPTRKV_MODEL_EXAMPLES / UPTRKV_MODEL_STEPS size the run.
"""

import os

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from conftest import NEG, BpfOps
from uptrkv.errors import InvalidValueError, MissingKeyError, StoreFullError
from uptrkv.store import KVStore

EXAMPLES = int(os.environ.get("UPTRKV_MODEL_EXAMPLES", "25"))
STEPS = int(os.environ.get("UPTRKV_MODEL_STEPS", "30"))

KEYS = st.sampled_from([0, 1, 2, 3, 5, 8, 13, 511, 1023])
SIZES = st.sampled_from([1, 2, 3, 4, 7, 8, 9, 16, 100, 1000, 2048, 4096])


def value_of(size, fill):
    return bytes((fill + i) % 256 for i in range(size))


class StoreMachine(RuleBasedStateMachine):
    ops: BpfOps = None          # set by the test (the object is loaded once per copy path)

    def __init__(self):
        super().__init__()
        self.store = KVStore.create(self.ops.obj)
        self.model: dict[int, bytes] = {}
        self.staged: dict[int, bytes] = {}

    def teardown(self):
        self.store.close()

    def _full(self, action):
        """Run action; on StoreFullError the store must be unchanged."""
        before = dict(self.store.items())
        try:
            action()
            return True
        except StoreFullError:
            assert dict(self.store.items()) == before
            return False

    @rule(key=KEYS, size=SIZES, fill=st.integers(0, 255))
    def put(self, key, size, fill):
        value = value_of(size, fill)
        if key in self.model and len(self.model[key]) != size:
            with pytest.raises(InvalidValueError):
                self.store.put(key, value)
        elif key not in self.model and key in self.staged:
            with pytest.raises(InvalidValueError, match="staged"):
                self.store.put(key, value)
        elif self._full(lambda: self.store.put(key, value)):
            self.model[key] = value

    @rule(key=KEYS)
    def delete(self, key):
        if key in self.model:
            self.store.delete(key)
            del self.model[key]
        else:
            with pytest.raises(MissingKeyError):
                self.store.delete(key)

    @rule(key=KEYS, size=SIZES)
    def resize(self, key, size):
        if key not in self.model:
            with pytest.raises(MissingKeyError):
                self.store.resize(key, size)
        elif key in self.staged and size != len(self.model[key]) and \
                not self.store.allocator().can_resize_in_place(self.store.slot(key), size):
            with pytest.raises(InvalidValueError, match="staged"):
                self.store.resize(key, size)
        elif self._full(lambda: self.store.resize(key, size)):
            old = self.model[key]
            self.model[key] = old[:size] + bytes(max(0, size - len(old)))

    @rule()
    def compact(self):
        if self.staged:
            with pytest.raises(InvalidValueError, match="staged"):
                self.store.compact()
        else:
            pages = self.store.pages
            self.store.compact()
            assert self.store.pages <= pages
            assert self.store.allocator().quarantined == []

    @rule(key=KEYS, size=SIZES, fill=st.integers(0, 255))
    def stage(self, key, size, fill):
        value = value_of(size, fill)
        if key in self.staged:
            with pytest.raises(InvalidValueError, match="already has a staged value"):
                self.store.stage(key, value)
        elif self._full(lambda: self.store.stage(key, value)):
            self.staged[key] = value

    @rule()
    def publish(self):
        assert self.store.publish_staged() == sorted(self.staged)
        self.model.update(self.staged)
        self.staged.clear()

    @precondition(lambda self: self.staged)
    @rule(data=st.data())
    def discard(self, data):
        key = data.draw(st.sampled_from(sorted(self.staged)))
        self.store.discard_staged(key)
        del self.staged[key]

    @rule()
    def reclaim(self):
        self.store.reclaim()
        assert self.store.allocator().quarantined == []

    @rule(key=KEYS, size=SIZES, fill=st.integers(0, 255))
    def bpf_put(self, key, size, fill):
        value = value_of(size, fill)
        ret = self.ops.put(key, value)
        if key not in self.model:
            assert ret == NEG["ENOENT"]
        elif len(self.model[key]) != size:
            assert ret == NEG["EMSGSIZE"]
        else:
            assert ret == 0
            self.model[key] = value

    @rule(key=KEYS)
    def bpf_delete(self, key):
        ret = self.ops.delete(key)
        if key in self.model:
            assert ret == 0
            del self.model[key]
        else:
            assert ret == NEG["ENOENT"]

    @invariant()
    def agree(self):
        assert self.store.keys() == sorted(self.model)
        for key, value in self.model.items():
            assert self.store.get(key) == value
            assert self.ops.get(key) == (len(value), value)
        assert self.store.verify() == []
        alloc = self.store.allocator()
        live = sorted(self.store.slot(k) for k in self.model)
        assert sorted(alloc.slots()) == sorted(live + list(self.store._staged.values()))


def test_store_agrees_with_a_dict(ops_obj):
    StoreMachine.ops = BpfOps(ops_obj)
    run_state_machine_as_test(StoreMachine, settings=settings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
