"""What checking each BPF program costs the running kernel's verifier.

Each program of the given objects (default: every object in build/bpf) is
loaded alone, and this prints the instructions the verifier processed (its
limit is 1,000,000), its total and peak states, the peak of the kernel's
unreclaimable slab while it checked (sampled from /proc/meminfo every 20 ms,
so an upper bound: it includes whatever else the kernel allocated meanwhile)
and the time taken. Objects with known keys are loaded against a store that
holds them. A program the verifier rejects is reported as such.

    python examples/verifier_cost.py [OBJECT ...]        on this kernel
    make vm-verifier-cost [OBJECTS="bench_run bench_get"] in the patched-kernel VM

OBJECT is a name in build/bpf (bench_run, bench_run.dynptr) or a path.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from uptrkv import known_keys  # noqa: E402
from uptrkv.loader import BpfObject, LoadError  # noqa: E402
from uptrkv.objects import bpf_dir, object_path  # noqa: E402
from uptrkv.store import KVStore  # noqa: E402


def slab_kb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("SUnreclaim:"):
                return int(line.split()[1])
    raise RuntimeError("/proc/meminfo has no SUnreclaim line")


class SlabPeak:
    """The highest SUnreclaim seen while the with-block runs (the load call releases the GIL)."""

    def __enter__(self):
        self.base = self.peak = slab_kb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, slab_kb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, slab_kb())


def find(name: str) -> Path:
    """A path as given, or a name in build/bpf ("bench_run", "bench_run.dynptr")."""
    if name.endswith(".o"):
        if not Path(name).exists():
            raise SystemExit(f"{name} does not exist")
        return Path(name)
    base, _, path = name.partition(".")
    return object_path(base, path or "stock")


def program_names(path: Path) -> list[str]:
    with BpfObject(path) as obj:
        return [p.name for p in obj.programs()]


def measure(path: Path, only: str, store: KVStore | None) -> str:
    with BpfObject(path) as obj:
        for p in obj.programs():
            p.set_autoload(p.name == only)
        obj.program(only).record_verifier_stats()
        t0 = time.monotonic()
        with SlabPeak() as slab:
            try:
                known_keys.load(obj, store) if store else obj.load()
                verdict = ""
            except LoadError as exc:
                verdict = f"  rejected: {os.strerror(exc.errno)}"
        secs = time.monotonic() - t0
        try:
            s = obj.program(only).verifier_stats
            counts = f"{s.insns_processed:9,d} {s.total_states:8,d} {s.peak_states:8,d}"
        except ValueError:
            counts = f"{'-':>9} {'-':>8} {'-':>8}"
    return (f"{only:24s} {counts} {(slab.peak - slab.base) // 1024:7d} {slab.peak // 1024:7d} "
            f"{secs:7.1f}{verdict}")


def store_for(path: Path) -> tuple[BpfObject, KVStore] | None:
    """A store holding the object's known keys (zeroed), if it declares any."""
    host = BpfObject(path)
    keys = known_keys.declared(host)
    if not keys:
        host.close()
        return None
    for p in host.programs():
        p.set_autoload(False)
    host.load()
    store = KVStore.create(host)
    store.put_many({k.id: bytes(k.size) for k in keys})
    return host, store


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("objects", nargs="*", help="object names in build/bpf or paths (default: all)")
    args = ap.parse_args(argv)
    names = args.objects or sorted(p.name[:-len(".bpf.o")] for p in bpf_dir().glob("*.bpf.o"))
    if not names:
        raise SystemExit(f"no BPF objects in {bpf_dir()}: run `make bpf`")
    print(f"Linux {os.uname().release}; slab in MB (rise while checking, peak), time in s")
    print(f"{'program':24s} {'insns':>9} {'states':>8} {'peak':>8} {'+slab':>7} {'slab':>7} {'secs':>7}")
    for name in names:
        path = find(name)
        print(f"# {path.name}", flush=True)
        held = store_for(path)
        try:
            for prog in program_names(path):
                print(measure(path, prog, held[1] if held else None), flush=True)
        finally:
            if held:
                held[1].close()
                held[0].close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
