"""On the patched kernel: the stock and dynptr copy paths give identical results."""

import os

import pytest

from conftest import EXPECT_DYNPTR, BpfOps
from uptrkv.loader import BpfObject
from uptrkv.objects import object_path
from uptrkv.store import KVStore

# conftest leaves this module out of a stock run; named explicitly (as the
# kselftest wrappers do), it skips there.
pytestmark = pytest.mark.skipif(not EXPECT_DYNPTR,
                                reason="needs the verifier patch (UPTRKV_EXPECT_DYNPTR=1, the VM)")

SIZES = [1, 2, 3, 4, 8, 13, 63, 256, 1000, 4095, 4096]


@pytest.fixture(scope="module")
def both(kernel):
    with BpfObject(object_path("test_kv_ops", "stock")).load() as stock, \
            BpfObject(object_path("test_kv_ops", "dynptr")).load() as dynptr:
        yield stock, dynptr


def test_same_results_on_both_paths(both):
    stock, dynptr = both
    with KVStore.create(stock) as store:
        # both objects have their own task storage map: give each the same content
        with KVStore.create(dynptr) as twin:
            ops = (BpfOps(stock), BpfOps(dynptr))
            for key, size in enumerate(SIZES):
                value = os.urandom(size)
                store.put(key, value)
                twin.put(key, value)
            for key, size in enumerate(SIZES):
                a, b = (o.get(key) for o in ops)
                assert a == b == (size, store.get(key))
                new = os.urandom(size)
                assert [o.put(key, new) for o in ops] == [0, 0]
                assert store.get(key) == twin.get(key) == new
            for probe in ([1024, 4096], [77, 4096], [len(SIZES) - 1, 100]):
                assert ops[0].get(*probe) == ops[1].get(*probe)
