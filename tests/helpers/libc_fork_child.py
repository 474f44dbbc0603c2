"""Run as a script: create a store, fork through libc (no Python at-fork hooks), report as JSON.

The child's copy of the store never learns about the fork from Python; it
tries calls that would register pages in the parent's map element.  The
parent then checks, through BPF, that its store is intact.
"""

import ctypes
import json
import os
import sys

from uptrkv.loader import BpfObject
from uptrkv.objects import object_path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bpf_ops import BpfOps  # noqa: E402
from uptrkv.store import KVStore  # noqa: E402


def child(store, w):
    out = {"forked_flag_before": store._forked}
    calls = {
        "put_new_page": lambda: store.put(5, bytes(4000)) or store.put(6, bytes(4000)),
        "ensure_pages": lambda: store.ensure_pages(3),
        "compact": store.compact,
    }
    for name, call in calls.items():
        try:
            call()
            out[name] = "no error"
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            out[name] = f"{type(exc).__name__}: {exc}"
    out["pages"] = store.pages
    os.write(w, json.dumps(out).encode())
    os.close(w)


def main():
    copy_path = sys.argv[1]
    obj = BpfObject(object_path("test_kv_ops", copy_path))
    obj.load()
    ops = BpfOps(obj)
    store = KVStore.create(obj)
    store.put(1, b"parent!!")
    store.put(2, bytes(4000))                # page 0 nearly full: another 4000 B needs a page
    r, w = os.pipe()
    libc = ctypes.CDLL(None, use_errno=True)
    pid = libc.fork()                        # bypasses os.register_at_fork
    if pid == 0:
        os.close(r)
        try:
            child(store, w)
        finally:
            os._exit(0)
    os.close(w)
    reply = b""
    while chunk := os.read(r, 65536):
        reply += chunk
    os.waitpid(pid, 0)
    result = {"child": json.loads(reply)}
    got = ops.get(1)
    result["bpf_get_after"] = [got[0], got[1].decode(errors="replace")]
    result["pages_after"] = store.pages
    store.put(5, bytes([5]) * 4000)          # the parent still adds its own page
    result["bpf_new_page"] = ops.get(5)[0]
    result["pages_grown"] = store.pages
    store.close()
    obj.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
