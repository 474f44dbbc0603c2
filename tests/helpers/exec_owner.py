"""Run as a script: create a store in a pinned map, then exec into stage 2.

Stage 1 (argv: copy_path pin_dir): a store for this process, value written,
map pinned; then execv() of this script with "stage2".
Stage 2 (same process, new image): the store's Python objects are gone;
report what BPF still sees, whether a new store can be created, and drop
the orphaned element.
"""

import json
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bpf_ops import BpfOps  # noqa: E402
from uptrkv.errors import InvalidValueError  # noqa: E402
from uptrkv.loader import BpfObject  # noqa: E402
from uptrkv.objects import object_path  # noqa: E402
from uptrkv.store import KVStore  # noqa: E402


def stage1(copy_path, pin):
    obj = BpfObject(object_path("test_kv_ops", copy_path))
    obj.load()
    store = KVStore.create(obj)
    store.put(1, b"before exec")
    store.map.pin(pin)
    os.execv(sys.executable, [sys.executable, __file__, "stage2", copy_path, pin])


def stage2(copy_path, pin):
    obj = BpfObject(object_path("test_kv_ops", copy_path))
    obj.map("kv_store_map").reuse_pinned(pin)
    obj.load()
    ops = BpfOps(obj)
    out = {"bpf_get": list(ops.get(1))}
    out["bpf_get"][1] = out["bpf_get"][1].decode(errors="replace")
    try:
        KVStore.create(obj)
        out["new_store"] = "created"
    except InvalidValueError as exc:
        out["new_store"] = str(exc)
    pidfd = os.pidfd_open(os.getpid())
    out["dropped"] = obj.map("kv_store_map").delete(struct.pack("i", pidfd))
    os.close(pidfd)
    out["bpf_get_after_drop"] = ops.get(1)[0]
    with KVStore.create(obj) as again:
        again.put(1, b"fresh")
        out["fresh"] = ops.get(1)[1].decode()
    os.unlink(pin)
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1] == "stage2":
        stage2(sys.argv[2], sys.argv[3])
    else:
        stage1(sys.argv[1], sys.argv[2])
