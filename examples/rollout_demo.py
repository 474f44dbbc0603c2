"""The RFC's rollout scenario, automated: v1 {1,2,3} -> v2 {2,3,4} -> v3 (key 3 grows).

An ops process (this script) owns the store of a target process (a child
doing getppid() in a loop), seeds it from v1's manifest, attaches v1, then
rolls out v2 and v3 on the same pinned map, printing each plan and the
values the programs left.  Run with `make rollout-demo` (as root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from uptrkv.manifest import load_manifest
from uptrkv.loader import BpfObject
from uptrkv.objects import object_path
from uptrkv.rollout import plan, rollout, start
from uptrkv.store import KVStore
from uptrkv.support import check_kernel, choose_copy_path

HERE = Path(__file__).resolve().parent / "rollout"
CHILD = "import os, time\nwhile True:\n    os.getppid()\n    time.sleep(0.001)\n"


def show(store: KVStore, manifest, title: str) -> None:
    print(f"\n{title}")
    for k in manifest.keys:
        print(f"  {k.id:>2}  {k.name:<10} {k.size:>3} B  {k.format(store.get(k.id))}")


def main() -> int:
    print(check_kernel())
    path = choose_copy_path()
    child = subprocess.Popen([sys.executable, "-c", CHILD])
    pin_dir = f"/sys/fs/bpf/uptrkv-rollout-{os.getpid()}"
    os.makedirs(pin_dir, exist_ok=True)

    def configure(obj: BpfObject) -> None:
        obj.globals.set_int("target_tgid", child.pid)

    try:
        versions = {v: (object_path(f"rollout_{v}", path), HERE / f"{v}.toml") for v in ("v1", "v2", "v3")}
        manifests = {v: load_manifest(toml, obj) for v, (obj, toml) in versions.items()}
        v1_obj = BpfObject(versions["v1"][0])
        configure(v1_obj)
        v1_obj.load()
        with KVStore.create(v1_obj, pid=child.pid, pin_path=f"{pin_dir}/kv") as store:
            current = start(store, v1_obj, manifests["v1"])
            time.sleep(0.2)
            show(store, manifests["v1"], f"v1 running in pid {child.pid} ({path} copy path):")
            for old, new in (("v1", "v2"), ("v2", "v3")):
                print()
                print(plan(store, manifests[old], manifests[new]))
                t0 = time.perf_counter()
                current = rollout(store, current, versions[new][0], manifests[new], configure=configure)
                took = (time.perf_counter() - t0) * 1000
                print(f"switched {old} -> {new} in {took:.1f} ms, map reused from {store.pin_path}")
                time.sleep(0.2)
                show(store, manifests[new], f"{new} running:")
            current.close()
    finally:
        child.kill()
        child.wait()
        shutil.rmtree(pin_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
