"""Fixtures for tests that run against the real kernel (as root).

Tests that need the kernel skip with the reason when it cannot host a store,
unless UPTRKV_REQUIRE_KERNEL=1 (set by .ci/run and the VM runner), where
that is a failure instead.  UPTRKV_EXPECT_DYNPTR=1 says the kernel carries
the verifier patch: the behavioural suite then runs on both copy paths.
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import subprocess
import sys
import time

import pytest

from bpf_ops import BpfOps  # noqa: F401 - the tests import it from here too

REQUIRE_KERNEL = os.environ.get("UPTRKV_REQUIRE_KERNEL") == "1"
EXPECT_DYNPTR = os.environ.get("UPTRKV_EXPECT_DYNPTR") == "1"

# A target process for stores owned by another process: it makes syscalls forever.
CHILD = "import os, time\nwhile True:\n    os.getppid()\n    time.sleep(0.001)\n"

# A target that runs (never stopped) but makes a syscall only when poked:
# it blocks in read() on its stdin; each byte makes it call getpid() (39),
# then read() (0) again.  So the last syscall number it entered is 0.
POKED = "import os\nwhile os.read(0, 1):\n    os.getpid()\n"


def wait_for(cond, timeout=60.0):
    """Poll cond until it holds (BPF runs in another task) or the timeout passes.

    The timeout only detects a failure; a passing test returns as soon as cond
    holds. It is generous because a target Python process can take seconds to
    start in a loaded TCG guest."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return False


class Target:
    """A child process making syscalls (on ``cpu`` if given); stop() freezes it."""

    def __init__(self, cpu: int | None = None, code: str = CHILD, stdin=None):
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=stdin)
        self.pid = self.proc.pid
        if cpu is not None:
            os.sched_setaffinity(self.pid, {cpu})

    def stop(self):
        os.kill(self.pid, signal.SIGSTOP)
        assert wait_for(lambda: open(f"/proc/{self.pid}/stat").read().split()[2] == "T")

    def cont(self):
        os.kill(self.pid, signal.SIGCONT)

    def poke(self):
        """Wake a POKED target: one getpid(), then it blocks in read() again."""
        self.proc.stdin.write(b"x")
        self.proc.stdin.flush()

    def blocked_in_read(self) -> bool:
        """A POKED target sits asleep in read() (syscall 0): it enters no syscall until poked."""
        with open(f"/proc/{self.pid}/syscall") as f:
            nr = f.read().split()[0]
        with open(f"/proc/{self.pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return nr == "0" and state == "S"

    def kill(self):
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def other_cpu():
    """Pin this process to one CPU and return another for a target (None on one CPU).

    A BPF program that runs long on the target's CPU then cannot delay this
    process, which must observe it while it runs.
    """
    mine = os.sched_getaffinity(0)
    cpus = sorted(mine)
    if len(cpus) < 2:
        yield None
        return
    os.sched_setaffinity(0, {cpus[0]})
    try:
        yield cpus[1]
    finally:
        os.sched_setaffinity(0, mine)


@pytest.fixture(scope="session")
def kernel():
    """The kernel can host a store (checked with a real probe program)."""
    from uptrkv.errors import UnsupportedKernelError
    from uptrkv.support import check_kernel
    try:
        return check_kernel()
    except (UnsupportedKernelError, FileNotFoundError) as exc:
        if REQUIRE_KERNEL:
            pytest.fail(f"UPTRKV_REQUIRE_KERNEL=1 but: {exc}")
        pytest.skip(str(exc))


def pytest_generate_tests(metafunc):
    only = metafunc.definition.get_closest_marker("copy_paths")
    if only and ("copy_path" not in metafunc.fixturenames or not only.args
                 or not set(only.args) <= {"stock", "dynptr"}):
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: copy_paths(...) takes 'stock' "
                                f"and/or 'dynptr' on a test using copy_path, not {only.args!r}")
    if "copy_path" in metafunc.fixturenames:
        paths = ["stock", "dynptr"] if EXPECT_DYNPTR else ["stock"]
        if only:                        # decided at collection: no fixture set up to be skipped
            paths = [p for p in paths if p in only.args] or [
                pytest.param(p, marks=pytest.mark.skip(
                    reason=f"runs only on {p}, which needs UPTRKV_EXPECT_DYNPTR=1 (the patched kernel)"))
                for p in only.args]
        metafunc.parametrize("copy_path", paths, scope="module")


@pytest.fixture(scope="module")
def ops_obj(kernel, copy_path):
    from uptrkv.loader import BpfObject
    from uptrkv.objects import object_path
    with BpfObject(object_path("test_kv_ops", copy_path)) as obj:
        obj.load()
        yield obj


@pytest.fixture
def bpf(ops_obj):
    return BpfOps(ops_obj)


@pytest.fixture
def store(ops_obj):
    from uptrkv.store import KVStore
    with KVStore.create(ops_obj) as s:
        yield s


@pytest.fixture
def bpffs(kernel, tmp_path_factory):
    """A directory on bpffs for pins, removed afterwards."""
    import shutil
    import subprocess
    root = "/sys/fs/bpf"
    if not os.path.ismount(root):
        subprocess.run(["mount", "-t", "bpf", "bpf", root], check=True)
    path = os.path.join(root, f"uptrkv-test-{os.getpid()}")
    os.makedirs(path, exist_ok=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


NEG = {name: -getattr(errno, name) for name in ("ENOENT", "E2BIG", "EINVAL", "EMSGSIZE", "ESRCH")}

# Modules that compare the two copy paths need a kernel that accepts both.
collect_ignore_glob = [] if EXPECT_DYNPTR else ["test_vm_*.py"]


@pytest.fixture
def named_roots(kernel, monkeypatch, tmp_path_factory):
    """A runtime root on tmpfs and a bpffs pin root for named stores, in the environment
    (so subprocesses find them too), removed afterwards with every store in them."""
    import shutil
    import tempfile
    root = tempfile.mkdtemp(prefix="uptrkv-test-", dir="/dev/shm")
    os.chmod(root, 0o700)
    bpffs = "/sys/fs/bpf"
    if not os.path.ismount(bpffs):
        subprocess.run(["mount", "-t", "bpf", "bpf", bpffs], check=True)
    pins = os.path.join(bpffs, f"uptrkv-test-{os.getpid()}-{os.path.basename(root)[-8:].replace('.', '_')}")
    monkeypatch.setenv("UPTRKV_ROOT", root)
    monkeypatch.setenv("UPTRKV_BPFFS", pins)
    yield root, pins
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(pins, ignore_errors=True)


def _run_snippet(code_or_path: str, args: tuple, env: dict) -> None:
    """In a forked child: run a snippet (or script) as __main__ with sys.argv set."""
    os.environ.update(env)
    from uptrkv import _killpoints
    _killpoints.arm(env.get("UPTRKV_KILL_AT"), env.get("UPTRKV_KILL_LOG"))
    if code_or_path.endswith(".py"):
        with open(code_or_path) as f:
            code, name = f.read(), code_or_path
    else:
        code, name = code_or_path, "<run_python>"
    sys.argv = [name if name.endswith(".py") else "-c", *args]
    exec(compile(code, name, "exec"), {"__name__": "__main__", "__file__": name})


def run_python(code_or_path, *args, env=None, timeout=120, check=True, fresh=False):
    """Run a Python snippet (or a script path) in another process; returns a
    CompletedProcess.  That process is forked from this one (conftest.Forked: the modules
    already imported, no interpreter start); fresh=True starts a new interpreter instead,
    for a test whose point is a process that shares nothing with this one."""
    here = os.path.dirname(os.path.abspath(__file__))
    e = dict(os.environ, **(env or {}))
    e["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.dirname(here), here, e.get("PYTHONPATH")) if p)
    cmd = [sys.executable, code_or_path, *args] if code_or_path.endswith(".py") else \
        [sys.executable, "-c", code_or_path, *args]
    if fresh:
        res = subprocess.run(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             timeout=timeout)
    else:
        p = Forked(_run_snippet, code_or_path, args, dict(env or {}))
        out, err = p.communicate(timeout)
        res = subprocess.CompletedProcess(cmd, p.returncode, out, err)
    if check and res.returncode != 0:
        raise AssertionError(f"{cmd[:3]} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
    return res


@functools.cache
def import_everything_a_child_may_import() -> None:
    """Import every uptrkv module (and pyelftools' ELF reader) in this process, once.

    The CLI and the ops code import lazily, so a forked child imports whatever
    this process has not imported yet, and pays for it in each child again.  On
    the debug kernel in the TCG guest a cold import of those modules takes
    minutes: test_ops_cli's first `create` did not finish in 300 s when its
    module ran first in a pytest process, and passed when earlier modules had
    imported them.  Importing them here makes a child's cost the same in any
    test order."""
    import importlib
    import pkgutil

    import uptrkv
    for mod in pkgutil.walk_packages(uptrkv.__path__, "uptrkv."):
        importlib.import_module(mod.name)
    importlib.import_module("elftools.elf.elffile")


class Forked:
    """FN(*ARGS) run in a forked child of this process: a separate process that a test can
    SIGKILL at a kill point or at a random time, like a script started with Popen, but
    without an interpreter start and its imports (seconds each in the TCG guest, where the
    named-store tests start hundreds of processes).  The child arms UPTRKV kill points from
    KILL_AT / KILL_LOG (uptrkv._killpoints.arm), writes to pipes read as ``stdout`` and
    ``stderr`` (its fds 1 and 2 too, so libbpf's output is kept), and exits 0 when FN
    returns, with SystemExit's code, or 1 with the traceback; it never returns into
    pytest.  It has Popen's poll, wait, send_signal, communicate and returncode.  Every
    uptrkv module is imported in this process first, so no child imports one."""

    def __init__(self, fn, *args, kill_at: str | None = None, kill_log: str | None = None):
        import_everything_a_child_may_import()
        pipes = [os.pipe(), os.pipe()]
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for (r, w), fd in zip(pipes, (1, 2)):
                    os.close(r)
                    os.dup2(w, fd)
                    os.close(w)
                sys.stdout = open(1, "w", buffering=1, closefd=False)
                sys.stderr = open(2, "w", buffering=1, closefd=False)
                from uptrkv import _killpoints
                _killpoints.arm(kill_at, kill_log)
                fn(*args)
                code = 0
            except SystemExit as exc:
                if isinstance(exc.code, int) or exc.code is None:
                    code = exc.code or 0
                else:
                    print(exc.code, file=sys.stderr)
            except BaseException:                      # noqa: BLE001 - reported, then _exit
                import traceback
                traceback.print_exc()
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        for r, w in pipes:
            os.close(w)
        self.pid = pid
        self.stdout, self.stderr = (os.fdopen(r, "r") for r, _ in pipes)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def readline(self, timeout: float = 120) -> str:
        """One line of its stdout; after TIMEOUT s without one, SIGKILL it and fail."""
        import select
        line = b""
        deadline = time.monotonic() + timeout
        fd = self.stdout.fileno()
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.kill()
                raise AssertionError(f"no line from the forked process in {timeout} s (so far {line!r})")
            byte = os.read(fd, 1)                       # unbuffered: communicate() reads the rest
            if not byte:
                break
            line += byte
        return line.decode(errors="replace")

    def __enter__(self) -> "Forked":
        return self

    def __exit__(self, *exc) -> None:
        """Never leave a child behind: kill it if it runs, reap it, close the pipes."""
        if self.poll() is None:
            self.kill()
            self.wait()
        for f in (self.stdout, self.stderr):
            if not f.closed:
                f.close()

    def communicate(self, timeout: float = 120) -> tuple[str, str]:
        """(stdout, stderr) once it has exited; after TIMEOUT s, SIGKILL it and fail."""
        import selectors
        deadline = time.monotonic() + timeout
        got: dict[int, list[bytes]] = {f.fileno(): [] for f in (self.stdout, self.stderr)}
        with selectors.DefaultSelector() as sel:
            for fd in got:
                sel.register(fd, selectors.EVENT_READ)
            while sel.get_map():
                left = deadline - time.monotonic()
                ready = sel.select(left) if left > 0 else []
                if not ready:
                    self.kill()
                    self.wait()
                    self.stdout.close()
                    self.stderr.close()
                    raise AssertionError(f"the forked process did not finish in {timeout} s")
                for key, _ in ready:
                    data = os.read(key.fd, 65536)
                    if data:
                        got[key.fd].append(data)
                    else:
                        sel.unregister(key.fd)
        out, err = (b"".join(got[f.fileno()]).decode(errors="replace") for f in (self.stdout, self.stderr))
        self.stdout.close()
        self.stderr.close()
        self.wait()
        return out, err
