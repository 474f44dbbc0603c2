"""A uptr page outlives every program run that uses it, under churn.

A target process spins on one CPU making syscalls; its ``tp_btf/sys_enter``
program (``bpf/stress_uptr_lifetime.bpf.c``) reads and writes the words of
a uptr page, through a dynptr on the dynptr copy path.  Meanwhile this
process, on another CPU, deletes the task storage element, unmaps the page,
maps a fresh one and registers it again, ``UPTRKV_STRESS_CYCLES`` times
(default 2,000: well under a second on the host, where a busy machine may
not run the target at all in that window, so it goes on cycling, for up to
``RACE_SECONDS``, until the program has run on a page registered in the loop
and found the element deleted; a cycle costs milliseconds under TCG).  Were a page unpinned while a program still used it, it would be
freed under that program: a debug kernel (KASAN, lockdep, PROVE_RCU)
reports that, and this test fails on any kernel report that appears in the
kernel log meanwhile.  ``make vmstress KERNEL_DEBUG=1`` runs it with
10,000 cycles on the debug kernel.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import re
import struct
import subprocess
import sys
import time

import pytest

from conftest import wait_for
from uptrkv.loader import BPF_NOEXIST, BpfObject
from uptrkv.objects import object_path

CYCLES = int(os.environ.get("UPTRKV_STRESS_CYCLES", "2000"))
RACE_SECONDS = 60       # how long to go on cycling after CYCLES for the program to race them
PAGE = 4096
WORDS = 32
SPIN = "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True:\n    os.getppid()\n"
# What KASAN, lockdep, PROVE_RCU and the rest of the kernel print when something is wrong.
REPORT = re.compile(r"BUG:|WARNING:|Oops|KASAN|general protection|possible circular locking|"
                    r"possible recursive locking|suspicious RCU usage|inconsistent lock state|"
                    r"scheduling while atomic|sleeping function called from invalid context")


class UserPage:
    """One anonymous page of this process and its address."""

    def __init__(self):
        self.mm = mmap.mmap(-1, PAGE, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        anchor = ctypes.c_char.from_buffer(self.mm)
        self.address = ctypes.addressof(anchor)
        del anchor
        self.words = memoryview(self.mm).cast("Q")

    def close(self):
        self.words.release()
        self.mm.close()


class KernelLog:
    """The kernel messages logged after this object was made (/dev/kmsg)."""

    def __init__(self):
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)

    def read(self) -> list[str]:
        lines = []
        while True:
            try:
                rec = os.read(self.fd, 8192)
            except BlockingIOError:
                break
            except BrokenPipeError:     # records overwritten meanwhile: keep reading
                continue
            lines.append(rec.decode(errors="replace").split(";", 1)[-1].rstrip("\n"))
        os.close(self.fd)
        return lines


@pytest.fixture
def two_cpus():
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs: BPF on one, user space on the other")
    saved = os.sched_getaffinity(0)
    yield cpus[0], cpus[1]
    os.sched_setaffinity(0, saved)


def test_delete_and_reregister_under_running_programs(kernel, copy_path, two_cpus):
    user_cpu, bpf_cpu = two_cpus
    klog = KernelLog()
    target = subprocess.Popen([sys.executable, "-c", SPIN, str(bpf_cpu)])
    pages: list[UserPage] = []
    try:
        with BpfObject(object_path("stress_uptr_lifetime", copy_path)) as obj:
            g = obj.globals
            g.set_int("target_tgid", target.pid)
            obj.load()
            stress_map = obj.map("stress_map")
            pidfd = os.pidfd_open(target.pid)
            key = struct.pack("i", pidfd)
            try:
                pages.append(UserPage())
                stress_map.update(key, struct.pack("Q", pages[-1].address), BPF_NOEXIST)
                with obj.program("stress_sys_enter").attach():
                    assert wait_for(lambda: g.get_int("runs_with_page") > 0), "the program never ran"
                    os.sched_setaffinity(0, {user_cpu})
                    runs_before = g.get_int("runs_with_page")

                    def raced():
                        return (g.get_int("runs_with_page") > runs_before
                                and g.get_int("runs_without_page") > 0)

                    # CYCLES cycles, then more until the program has raced
                    # them: on a fast host 2,000 cycles take a few ms, a window
                    # in which a busy host may not schedule the target at all.
                    t0 = time.monotonic()
                    cycles = 0
                    while cycles < CYCLES or (not raced() and time.monotonic() - t0 < RACE_SECONDS):
                        assert stress_map.delete(key)
                        pages.pop().close()
                        pages.append(UserPage())
                        stress_map.update(key, struct.pack("Q", pages[-1].address), BPF_NOEXIST)
                        cycles += 1
                    elapsed = time.monotonic() - t0
                    runs_during = g.get_int("runs_with_page") - runs_before
                    missed = g.get_int("runs_without_page")
                    # The page registered last is live: the program's writes land in it.
                    assert wait_for(lambda: min(pages[-1].words[:WORDS]) > 0), \
                        "the program's writes never reached the page registered last"
                stress_map.delete(key)
            finally:
                os.close(pidfd)
            assert g.get_int("copy_errors") == 0
            assert g.get_int("words_done") == WORDS * g.get_int("runs_with_page")
    finally:
        target.kill()
        target.wait()
        for p in pages:
            p.close()
    print(f"{cycles} cycles in {elapsed:.1f} s: {runs_during} runs on pages registered "
          f"in the loop, {missed} runs found no page")
    reports = [line for line in klog.read() if REPORT.search(line)]
    assert not reports, "kernel reports during the stress:\n" + "\n".join(reports)
    # The program really raced the churn: it ran on pages registered in the
    # loop and also found the element deleted.
    assert runs_during > 0 and missed > 0, (runs_during, missed)
