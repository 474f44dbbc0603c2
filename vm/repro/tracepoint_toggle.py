"""Reproducer: attach/detach a tp_btf/sys_enter program in a tight loop
while a process on another CPU makes syscalls.  No store is involved.

Each attach and detach of the only sys_enter probe flips the tracepoint's
static key, which x86 patches into live kernel text through an int3
(text_poke_bp).  The other CPU is inside the syscall entry path the whole
time.  On a correct machine this loop never fails; it prints the number of
toggles and how many syscalls the program counted.

    python vm/repro/tracepoint_toggle.py [SECONDS]   (default 30)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from uptrkv.loader import BpfObject
from uptrkv.objects import object_path

SPINNER = "import os\nwhile True:\n    os.getppid()\n"


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        print("needs 2 CPUs: the syscalls must run beside the patching CPU", file=sys.stderr)
        return 2
    spinner = subprocess.Popen([sys.executable, "-c", SPINNER])
    try:
        os.sched_setaffinity(spinner.pid, {cpus[1]})
        os.sched_setaffinity(0, {cpus[0]})
        with BpfObject(object_path("repro_sys_enter_toggle", "stock")) as obj:
            obj.load()
            prog = obj.program("repro_sys_enter")
            start = time.monotonic()
            toggles = 0
            while time.monotonic() - start < seconds:
                prog.attach().close()
                toggles += 1
            elapsed = time.monotonic() - start
            hits = obj.globals.get_int("hits", signed=False)
    finally:
        spinner.kill()
        spinner.wait()
    print(f"repro: {toggles} attach/detach toggles in {elapsed:.1f} s, "
          f"{hits} syscalls counted, no crash")
    return 0


if __name__ == "__main__":
    sys.exit(main())
