"""The Python side reads the layout from the object's BTF and agrees with C."""

import pytest

from uptrkv.allocator import Slot


@pytest.fixture(scope="module")
def layout(kernel):
    from uptrkv.layout import Layout
    from uptrkv.loader import BpfObject
    from uptrkv.objects import object_path
    with BpfObject(object_path("test_kv_ops")) as obj:
        return Layout.from_btf(obj.btf)


def test_constants_from_btf(layout):
    assert (layout.max_keys, layout.page_size, layout.max_pages, layout.max_value_size) == (1024, 4096, 8, 4096)
    assert layout.value_size == 8 * 9
    assert layout.meta_field == 0 and layout.page_fields == tuple(8 * i for i in range(1, 9))


@pytest.mark.parametrize("slot", [Slot(0, 0, 1), Slot(7, 4095, 1), Slot(0, 0, 4096), Slot(3, 2048, 2048)])
def test_encoding_round_trips_both_ends(layout, slot):
    entry = layout.encode(slot)
    assert entry < 2 ** 32 and entry & layout.init_bit
    assert layout.decode(entry) == slot


def test_4096_is_not_stored_as_zero(layout):
    assert (layout.encode(Slot(0, 0, 4096)) >> layout.size_shift) & layout.size_mask == 4095
    assert layout.decode(0) is None


@pytest.mark.parametrize("slot", [Slot(0, 1, 4096), Slot(8, 0, 8), Slot(0, 0, 0), Slot(0, 4090, 8)])
def test_encoding_refuses_impossible_slots(layout, slot):
    with pytest.raises(ValueError):
        layout.encode(slot)
