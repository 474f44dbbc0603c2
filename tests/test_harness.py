"""The VM harness hides nothing: kernel reports, guest deaths and exit codes.

The console scanner is checked on console text written here (no VM needed);
the vmhost tests boot the patched kernel and prove, end to end, that a
command's exit code comes back and that each way a run can go wrong fails it:
a panic, a kernel stack after a clean exit, an abnormal end after the command
and a timeout.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parent.parent
SCAN = TOP / "vm" / "scan-console.sh"
VMRUN = TOP / "vm" / "vmrun.sh"

BOOT = """\
Decompressing Linux... Parsing ELF... done.
[    0.000000] Linux version 7.2.13 (root@vm) #1 SMP PREEMPT_DYNAMIC
[    0.412001] virtio_blk virtio1: [vda] 0 512-byte logical blocks
[    1.200000] Run /init as init process
guest kernel: 7.2.13
tests/test_x.py ....                                                     [100%]
WARNING: this line is the guest's own output, not the kernel's
"""

REPORTS = {
    "oops after guest output on one line":
        ".....[   55.906386] Oops: int3: 0000 [#1] SMP NOPTI\n[   55.907426] RIP: 0010:f+0xf/0x90\n",
    "warning": "[   12.000001] WARNING: CPU: 1 PID: 84 at kernel/bpf/core.c:10 f+0x1/0x2\n",
    "kasan": "[    3.100000] BUG: KASAN: slab-use-after-free in f+0x10/0x20\n",
    "lockdep": "[    3.100000] WARNING: possible circular locking dependency detected\n",
    "rcu stall": "[   40.000000] rcu: INFO: rcu_preempt self-detected stall on CPU\n",
    "suspicious rcu": "[    3.100000] =============================\n"
                      "[    3.100001] WARNING: suspicious RCU usage\n",
    "hung task": "[  243.000000] INFO: task python:84 blocked for more than 120 seconds.\n",
    "panic": "[    9.000000] Kernel panic - not syncing: Fatal exception in interrupt\n",
    "ubsan": "[    9.000000] UBSAN: array-index-out-of-bounds in kernel/x.c:3:4\n",
    "user segfault": "[    9.000000] python[99]: segfault at 0 ip 0 sp 0 error 4\n",
    "general protection fault":
        "[    9.000000] Oops: general protection fault, probably for non-canonical address\n",
    "kernel BUG at": "[    9.000000] kernel BUG at mm/slub.c:553!\n",
    "sleeping function": "[    9.000000] BUG: sleeping function called from invalid context at x.c:1\n",
    "inconsistent lock state": "[    9.000000] WARNING: inconsistent lock state\n",
    "soft lockup": "[   60.000000] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [python:84]\n",
    "refcount": "[    9.000000] refcount_t: underflow; use-after-free.\n",
    "list corruption": "[    9.000000] list_add corruption. prev->next should be next\n",
    "rcu stall on cpus/tasks": "[   40.000000] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n",
    "rcu expedited stall":
        "[   40.000000] rcu: INFO: rcu_preempt detected expedited stalls on CPUs/tasks: {\n",
    "rcu kthread starved": "[   40.000000] rcu: rcu_preempt kthread starved for 10502 jiffies!\n",
    "slub object error": "[    9.000000] BUG kmalloc-64 (Not tainted): Poison overwritten\n",
    "stack trace alone": "[   40.843075] Call Trace:\n[   40.843076]  <TASK>\n",
    # printed before the next record's timestamp: a report may be among them
    "dropped records": "** 42 printk messages dropped **\n",
}


def scan(tmp_path, text):
    log = tmp_path / "console.log"
    log.write_text(text)
    return subprocess.run([SCAN, log], capture_output=True, text=True)


@pytest.mark.nokernel
def test_clean_console_passes(tmp_path):
    result = scan(tmp_path, BOOT)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.nokernel
@pytest.mark.parametrize("kind", sorted(REPORTS))
def test_kernel_report_fails_with_excerpt(tmp_path, kind):
    report = REPORTS[kind]
    result = scan(tmp_path, BOOT + report + "[   60.000000] reboot: Power down\n")
    assert result.returncode == 1
    assert "kernel report" in result.stderr
    for line in report.splitlines():     # the report itself is shown, not summarised
        assert line in result.stderr


@pytest.mark.nokernel
def test_guest_output_naming_a_report_passes(tmp_path):
    # Only the kernel's own formats count: a test named after one is not a report.
    names = "".join(f"tests/test_harness.py::test_kernel_report_fails_with_excerpt[{kind}] PASSED\n"
                    for kind in sorted(REPORTS))
    result = scan(tmp_path, BOOT + names + "printk messages dropped\n")
    assert result.returncode == 0, result.stderr


@pytest.mark.nokernel
def test_missing_console_is_an_error(tmp_path):
    result = subprocess.run([SCAN, tmp_path / "absent.log"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "no console log" in result.stderr


def vmrun(tmp_path, *command, vm_timeout=300):
    env = dict(os.environ, VM_CONSOLE_LOG=str(tmp_path / "console.log"), VM_TIMEOUT=str(vm_timeout))
    return subprocess.run([VMRUN, *command], capture_output=True, text=True, env=env,
                          cwd=TOP, timeout=vm_timeout + 300)


@pytest.mark.vmhost
def test_guest_exit_code_comes_back(tmp_path):
    # The arguments reach the guest's sh (dash) as they were given, a tab
    # too (bash's printf %q writes $'tab\there', which dash does not read).
    args = ["guest says", "it's", "$HOME", "back\\slash", "", "tab\there"]
    result = vmrun(tmp_path, "sh", "-c", 'printf "<%s>" "$@"; echo; exit 3', "sh", *args)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "".join(f"<{a}>" for a in args) in result.stdout
    assert "FAILED" not in result.stdout


# Each way a run can go wrong, made to happen in a real guest: (guest command,
# VM_TIMEOUT, the failure vmrun must report, text of which one must be shown).
FAILURES = {
    # A command that "succeeds" after crashing the kernel.
    "panic": ("echo c > /proc/sysrq-trigger; exit 0", 300,
              "death+kernel-report", ("Kernel panic", "sysrq")),
    # sysrq-l prints every CPU's stack (NMI backtrace) and the kernel goes on:
    # the command exits 0 and only the console tells.
    "stack after a clean exit": ("echo l > /proc/sysrq-trigger; sleep 2; exit 0", 300,
                                 "kernel-report", ("Call Trace:",)),
    # The command's success is on record (the rc file guest-run.sh writes),
    # then the guest resets without powering off: vng's exit code tells.
    "abnormal end after the command": (
        'echo 0 > "$UPTRKV_RESULTS/rc"; echo b > /proc/sysrq-trigger; sleep 30', 300,
        "exit-mismatch", ("the guest command exited with 0, but vng with",)),
    "timeout": ("sleep 3600", 120, "timeout", ("did not finish within 120 s",)),
}


@pytest.mark.vmhost
@pytest.mark.parametrize("kind", sorted(FAILURES))
def test_failure_fails_the_run(tmp_path, kind):
    command, vm_timeout, label, evidence = FAILURES[kind]
    result = vmrun(tmp_path, "sh", "-c", command, vm_timeout=vm_timeout)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert f"FAILED ({label})" in out
    assert any(text in out for text in evidence), out
