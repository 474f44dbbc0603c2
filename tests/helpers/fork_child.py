"""Run as a script: create a store, fork, let the child misuse it, report as JSON.

The child tries every call on the parent's store, writes raw bytes at the
addresses of the parent's pages, then exits normally (so __del__ runs at
interpreter exit).  The parent then checks, through BPF, that its store is
intact and still grows.
"""

import ctypes
import json
import os
import sys

from uptrkv.errors import StoreOwnerError
from uptrkv.loader import BpfObject
from uptrkv.objects import object_path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bpf_ops import BpfOps  # noqa: E402
from uptrkv.store import KVStore  # noqa: E402


def child(store, w):
    out = {}
    calls = {
        "get": lambda: store.get(1),
        "put": lambda: store.put(1, b"child!!!"),
        "get_u64": lambda: store.get_u64(1),            # the parent cached key 1 before the fork
        "put_u64": lambda: store.put_u64(1, 7),
        "get_into": lambda: store.get_into(1, bytearray(8)),
        "put_many": lambda: store.put_many({3: b"child"}),
        "put_new": lambda: store.put(2, b"child"),
        "delete": lambda: store.delete(1),
        "resize": lambda: store.resize(1, 16),
        "compact": store.compact,
        "keys": store.keys,
        "close": store.close,
    }
    for name, call in calls.items():
        try:
            call()
            out[name] = "no error"
        except StoreOwnerError as exc:
            out[name] = "StoreOwnerError: " + str(exc)
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            out[name] = f"{type(exc).__name__}: {exc}"
    os.write(w, json.dumps(out).encode())
    os.close(w)


def main():
    copy_path = sys.argv[1]
    obj = BpfObject(object_path("test_kv_ops", copy_path))
    obj.load()
    ops = BpfOps(obj)
    store = KVStore.create(obj)
    store.put(1, b"parent!!")
    assert store.get(1) == b"parent!!" and store.get_u64(1)    # cached: the fast paths must still refuse
    address = store._pages[0].address + store.slot(1).offset
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        # The child's own view of the parent's page: wiped on fork, private.
        raw = ctypes.string_at(address, 8)
        ctypes.memmove(address, b"CHILD!!!", 8)
        child(store, w)                       # its close() drops the child's copies
        second = KVStore.create(obj)          # the child may have a store of its own
        second.put(1, b"child's")
        second_ok = ops.get(1) == (7, b"child's")
        second.close()
        with open(sys.argv[2], "w") as f:
            json.dump({"raw_in_child": raw.hex(), "own_store_in_child": second_ok}, f)
        sys.exit(0)                           # normal exit: __del__ of the inherited store runs
    os.close(w)
    reply = b""
    while chunk := os.read(r, 65536):
        reply += chunk
    _, status = os.waitpid(pid, 0)
    result = {"child": json.loads(reply), "child_status": status}
    with open(sys.argv[2]) as f:
        result.update(json.load(f))
    result["bpf_get_after"] = list(ops.get(1))
    result["bpf_get_after"][1] = result["bpf_get_after"][1].decode(errors="replace")
    result["get_after"] = store.get(1).decode()
    for key in range(10, 17):                 # pages 1..7 still register
        store.put(key, bytes([key]) * 4096)
    result["pages_after"] = store.pages
    result["bpf_page7"] = ops.get(16)[0]
    store.close()
    obj.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
