"""Named stores: the cost of open() on an existing 8-page store, and of the ops CLI's get/put.

    make bench-named        (as root; prints medians and ranges of interleaved rounds)

The store lives under a temporary runtime root on /dev/shm and bpffs pin
root; its target is a sleeping child process.  Each round times a writer
open() + close() (lock, state and layout checks, mapping 9 files, one
registration syscall, the allocation rebuilt from the metadata page), a
reader open() + close(), and one `uptrkv get` and `uptrkv put` process each
(interpreter start-up included: what an ops script pays per call) next to a
bare `python -c pass` process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from uptrkv.loader import BpfObject
from uptrkv.named_store import NamedStore
from uptrkv.objects import object_path


def stats(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1e3:8.2f} ms  (range {min(xs) * 1e3:.2f}-{max(xs) * 1e3:.2f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--no-cli", action="store_true", help="skip the uptrkv get/put processes")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="uptrkv-bench-", dir="/dev/shm")
    pins = f"/sys/fs/bpf/uptrkv-bench-{os.getpid()}"
    os.environ["UPTRKV_ROOT"], os.environ["UPTRKV_BPFFS"] = root, pins
    target = subprocess.Popen(["sleep", "3600"])
    times: dict[str, list[float]] = {"open (writer) + close": [], "open (reader) + close": [],
                                     "uptrkv get (process)": [], "uptrkv put (process)": [],
                                     "python -c pass (process)": []}
    try:
        with BpfObject(object_path("test_kv_ops")).load() as obj:
            s = NamedStore.create(obj, "bench", pid=target.pid)
            s.put_many({k: bytes([k & 255]) * 240 for k in range(1, 129)})   # 128 x 240 B: 8 pages
            pages, keys = s.pages, len(s)
            s.close()
        cli = [sys.executable, "-m", "uptrkv.cli"]
        for _ in range(args.rounds):
            t = time.perf_counter()
            NamedStore.open("bench").close()
            times["open (writer) + close"].append(time.perf_counter() - t)
            t = time.perf_counter()
            NamedStore.open("bench", readonly=True).close()
            times["open (reader) + close"].append(time.perf_counter() - t)
            if not args.no_cli:
                t = time.perf_counter()
                subprocess.run(cli + ["get", "bench", "7"], check=True, stdout=subprocess.DEVNULL)
                times["uptrkv get (process)"].append(time.perf_counter() - t)
                t = time.perf_counter()
                subprocess.run(cli + ["put", "bench", "7", (bytes([7]) * 240).hex()], check=True,
                               stdout=subprocess.DEVNULL)
                times["uptrkv put (process)"].append(time.perf_counter() - t)
                t = time.perf_counter()
                subprocess.run([sys.executable, "-c", "pass"], check=True)
                times["python -c pass (process)"].append(time.perf_counter() - t)
        print(f"named store: {keys} keys on {pages} data pages, {args.rounds} interleaved rounds")
        for name, xs in times.items():
            if xs:
                print(f"  {name:26} {stats(xs)}")
        with NamedStore.open("bench") as s:
            s.destroy()
    finally:
        target.kill()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(pins, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
