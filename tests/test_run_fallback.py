"""./run on a host whose kernel cannot host a store: `./run demo` and `./run test`
say why and run in the patched-kernel VM instead (make vmdemo, make vmtest-all),
and make's exit code is ./run's, so CI fails when the VM part fails.

The real `run` script runs from a copy of it in a temporary checkout whose
.venv/bin/python is a stand-in: `-m uptrkv.cli check` answers as a kernel
without uptr would (exit 3 and the reason), anything else goes to the real
interpreter.  `make`, `dpkg-query` and `apt-get` are stand-ins first on PATH
that record their arguments: nothing is built, installed or downloaded, and no
VM boots.  The venv stamp matches pyproject.toml, so setup_venv does nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.nokernel

TOP = Path(__file__).resolve().parent.parent
NO_UPTR = ("uptrkv: unsupported: kernel 6.1.0 has no uptr support in task storage "
           "(/sys/kernel/btf/vmlinux has no BPF_UPTR field type): a store needs Linux >= 6.13")
REASON = NO_UPTR.removeprefix("uptrkv: unsupported: ")
BUILD = "-s bpf"                    # host_supported builds the probe (and mounts nothing) first

PYTHON = """#!/bin/sh
printf '%s\\n' "$*" >> "$FAKE_LOG/python"
if [ "$1 $2 $3" = "-m uptrkv.cli check" ]; then
    printf '%s\\n' "$FAKE_CHECK_MSG" >&2
    exit "$FAKE_CHECK_RC"
fi
exec "$REAL_PYTHON" "$@"
"""
MAKE = """#!/bin/sh
printf '%s\\n' "$*" >> "$FAKE_LOG/make"
[ "$1" = -s ] && exit "$FAKE_BUILD_RC"
exit "$FAKE_MAKE_RC"
"""
DPKG_QUERY = """#!/bin/sh
for last; do :; done
printf '%s\\n' "$last" >> "$FAKE_LOG/dpkg-query"
printf 'install ok installed'
"""
APT_GET = """#!/bin/sh
printf '%s\\n' "$*" >> "$FAKE_LOG/apt-get"
exit 100
"""


def _script(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def run(tmp_path):
    """run(*args, check_rc=3, check_msg=NO_UPTR, make_rc=0, build_rc=0) -> (CompletedProcess, calls)

    calls maps each stand-in (python, make, dpkg-query, apt-get) to the list of
    its invocations' arguments."""
    checkout, fakebin, log = tmp_path / "checkout", tmp_path / "bin", tmp_path / "log"
    checkout.mkdir()
    log.mkdir()
    shutil.copy2(TOP / "run", checkout / "run")
    shutil.copy2(TOP / "pyproject.toml", checkout / "pyproject.toml")
    _script(checkout / ".venv" / "bin" / "python", PYTHON)
    (checkout / ".venv" / ".uptrkv-deps").write_text(
        hashlib.sha256((TOP / "pyproject.toml").read_bytes()).hexdigest() + "\n")
    for name, text in (("make", MAKE), ("dpkg-query", DPKG_QUERY), ("apt-get", APT_GET)):
        _script(fakebin / name, text)

    def go(*args, check_rc=3, check_msg=NO_UPTR, make_rc=0, build_rc=0):
        env = {"PATH": f"{fakebin}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
               "HOME": str(tmp_path), "LC_ALL": "C", "FAKE_LOG": str(log),
               "REAL_PYTHON": sys.executable, "FAKE_CHECK_RC": str(check_rc),
               "FAKE_CHECK_MSG": check_msg, "FAKE_MAKE_RC": str(make_rc),
               "FAKE_BUILD_RC": str(build_rc)}
        res = subprocess.run([str(checkout / "run"), *args], env=env, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
        calls = {}
        for name in ("python", "make", "dpkg-query", "apt-get"):
            f = log / name
            calls[name] = f.read_text().splitlines() if f.exists() else []
            f.unlink(missing_ok=True)
        # Nothing was installed, and the venv was taken as it is.
        assert calls["apt-get"] == [] and "creating .venv" not in res.stderr, res.stderr
        return res, calls
    return go


def test_run_test_skips_the_host_suite_and_runs_the_whole_suite_in_the_vm(run):
    res, calls = run("test")
    assert res.returncode == 0, res.stderr
    assert f"[run] skipping the host tests: {REASON}\n" in res.stderr
    assert "[run] running the whole suite in the patched-kernel VM instead" in res.stderr
    assert calls["python"] == ["-m uptrkv.cli check"]
    assert calls["make"] == [BUILD, "vmtest-all"]
    assert "qemu-system-x86" in calls["dpkg-query"]     # the VM's packages were checked for


def test_run_demo_runs_the_demo_in_the_vm(run):
    res, calls = run("demo")
    assert res.returncode == 0, res.stderr
    assert f"[run] this kernel cannot run the demo: {REASON}\n" in res.stderr
    assert "[run] running the demo in the patched-kernel VM instead" in res.stderr
    assert calls["make"] == [BUILD, "vmdemo"]
    assert "qemu-system-x86" in calls["dpkg-query"]


@pytest.mark.parametrize("command, target", [("test", "vmtest-all"), ("demo", "vmdemo")])
def test_a_failing_vm_run_fails_run_with_its_exit_code(run, command, target):
    """CI runs ./run test: a VM that cannot boot, or a failing suite in it, must fail CI."""
    res, calls = run(command, make_rc=7)
    assert res.returncode == 7, res.stderr
    assert calls["make"] == [BUILD, target]


@pytest.mark.parametrize("command", ["test", "demo"])
def test_a_failing_bpf_build_fails_run_before_the_probe(run, command):
    """The probe needs the freshly built objects: a stale build/bpf must not answer."""
    res, calls = run(command, build_rc=2)
    assert res.returncode == 1, res.stderr
    assert "[run] building the BPF objects failed (exit 2)\n" in res.stderr
    assert calls["python"] == [] and calls["make"] == [BUILD]


@pytest.mark.parametrize("command", ["test", "demo"])
def test_a_probe_that_fails_otherwise_fails_run_without_the_vm(run, command):
    """Exit 1 from `uptrkv check` is a bug (a traceback), not a kernel without uptr."""
    msg = "LoadError: [Errno 13] loading probe_uptr.bpf.o: Permission denied"
    res, calls = run(command, check_rc=1, check_msg=msg)
    assert res.returncode == 1
    assert f"[run] the kernel probe failed (exit 1): {msg}\n" in res.stderr
    assert "skipping" not in res.stderr and "VM instead" not in res.stderr
    assert calls["make"] == [BUILD]


@pytest.mark.parametrize("command", ["test", "demo"])
def test_a_kernel_that_hosts_a_store_runs_on_the_host(run, command):
    res, calls = run(command, check_rc=0, check_msg="")
    assert res.returncode == 0, res.stderr
    assert "VM instead" not in res.stderr
    assert calls["make"] == [BUILD, command]
    res, calls = run(command, check_rc=0, check_msg="", make_rc=7)
    assert res.returncode == 7


def test_extra_arguments_go_to_make_as_they_are_with_no_probe(run):
    """Only a bare `./run test` or `./run demo` probes and may fall back: with more
    arguments, ./run passes them all to make after the set-up, like any target.
    (They are make's: `-k` here is make's --keep-going, not pytest's -k.)"""
    res, calls = run("test", "-k", "foo", make_rc=2)
    assert res.returncode == 2
    assert calls["python"] == [] and "skipping" not in res.stderr
    assert calls["make"] == ["test -k foo"]
    res, calls = run("vmshell")
    assert res.returncode == 0 and calls["python"] == [] and calls["make"] == ["vmshell"]
