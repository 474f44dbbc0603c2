"""The ops commands of `uptrkv`, driven only through subprocesses (as an operator would).

Each test gets its own runtime root (tmpfs, under /dev/shm) and bpffs
directory, given to every command through UPTRKV_ROOT and UPTRKV_BPFFS, and
a target process (a shell loop that makes syscalls).  This is the README's
"Ops workflow", step by step.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from conftest import Forked, wait_for

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "rollout"
LOOP = "while true; do sleep 0.01; done"


def obj(name: str) -> str:
    from uptrkv.objects import object_path
    return str(object_path(name))


class Ops:
    """Run uptrkv commands with this test's root and bpffs, each in its own process:
    `python -m uptrkv.cli` started as a user would when ``spawn`` is set (the workflow
    test), else uptrkv.cli.main() in a process forked from this one (conftest.Forked: an
    interpreter start costs 5-12 s in the TCG guest)."""

    def __init__(self, root: str, bpffs: str):
        self.root, self.bpffs = root, bpffs
        self.spawn = False
        self.env = dict(os.environ, UPTRKV_ROOT=root, UPTRKV_BPFFS=bpffs, PYTHONPATH=str(REPO))
        self.env.pop("UPTRKV_DEBUG", None)

    def run(self, *args, rc: int | None = 0, spawn: bool | None = None) -> subprocess.CompletedProcess:
        argv = [*map(str, args)]
        if self.spawn if spawn is None else spawn:
            res = subprocess.run([sys.executable, "-m", "uptrkv.cli", *argv], env=self.env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=180,
                                 cwd=str(REPO))
        else:
            code, out, err = self.forked(*argv)
            res = subprocess.CompletedProcess(argv, code, out, err)
        if rc is not None:
            assert res.returncode == rc, f"{args}: exit {res.returncode}\n{res.stdout}\n{res.stderr}"
        return res

    def json(self, *args, spawn: bool | None = None):
        return json.loads(self.run(*args, "--json", spawn=spawn).stdout)

    def here(self, *args, rc: int | None = 0):
        """The same command run by uptrkv.cli.main() in this process (no interpreter start:
        in the TCG guest one costs seconds).  Returns (exit status, stdout, stderr)."""
        import contextlib
        import io
        from uptrkv.cli import main
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(self._with_roots(args))
            except SystemExit as exc:
                code = exc.code
        if rc is not None:
            assert code == rc, f"{args}: exit {code}\n{out.getvalue()}\n{err.getvalue()}"
        return code, out.getvalue(), err.getvalue()

    def _with_roots(self, args) -> list[str]:
        """ARGS with this test's --root and --bpffs, unless the test gave its own."""
        argv = [*map(str, args)]
        for opt, value in (("--root", self.root), ("--bpffs", self.bpffs)):
            if opt not in argv:
                argv += [opt, value]
        return argv

    def forked(self, *args, kill_at: str | None = None, kill_log: str | None = None) -> tuple[int, str, str]:
        """The command run by uptrkv.cli.main() in a forked child (a process a kill point
        can SIGKILL).  Returns (exit status, stdout, stderr)."""
        from uptrkv.cli import main

        def cli():
            os.environ.pop("UPTRKV_DEBUG", None)
            raise SystemExit(main(self._with_roots(args)))
        p = Forked(cli, kill_at=kill_at, kill_log=kill_log)
        out, err = p.communicate(timeout=300)
        return p.returncode, out, err

    def here_json(self, *args):
        return json.loads(self.here(*args, "--json")[1])

    def calls(self, name: str) -> int:
        """The counter, read by a forked process (polled: never an interpreter start)."""
        return self.json("get", name, "calls", spawn=False)["value"]


@pytest.fixture
def ops(kernel):
    root = tempfile.mkdtemp(prefix="uptrkv-test-", dir="/dev/shm")
    os.chmod(root, 0o700)
    if not os.path.ismount("/sys/fs/bpf"):
        subprocess.run(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], check=True)
    bpffs = f"/sys/fs/bpf/uptrkv-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        yield Ops(root, bpffs)
    finally:
        shutil.rmtree(bpffs, ignore_errors=True)     # unpinning the links detaches the programs
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def target():
    proc = subprocess.Popen(["sh", "-c", LOOP])
    yield proc
    proc.kill()
    proc.wait()


def one_line_error(res: subprocess.CompletedProcess, *words: str) -> None:
    err = res.stderr.strip()
    assert err.startswith("uptrkv: error: ") and "\n" not in err and "Traceback" not in err, err
    for w in words:
        assert w in err, err


def _sample_counter(root: str, name: str) -> None:
    """In a forked child: a lock-free reader printing the 'calls' counter (key 2) until killed."""
    from uptrkv.named_store import NamedStore
    with NamedStore.open(name, root=root, readonly=True) as reader:
        while True:
            print(reader.get_u64(2), flush=True)
            time.sleep(0.02)


# userspace: what this test adds to the others is user space's (a new interpreter per
# README step, ~15 s each under TCG); its kernel side (attach, pins, rollout, detach,
# destroy) also runs in the VM, in the tests below.
@pytest.mark.userspace
def test_ops_workflow_end_to_end(ops, target, tmp_path):
    """The README's ops workflow.  Each of its steps is a new `python -m uptrkv.cli`
    process, as a user runs it (spawn=True); the checks between them, and the polling of
    the counter, run in processes forked from this one (an interpreter start costs
    seconds in the TCG guest)."""
    pid = target.pid
    made = ops.json("create", "--pid", pid, "--object", obj("rollout_v1"),
                    "--manifest", EXAMPLES / "v1.toml", spawn=True)
    name = made["name"]
    assert name == f"rollout-{pid}" and made["keys"] == 3

    seed = tmp_path / "seed.toml"
    seed.write_text('last = 7\nv1_only = "0x10"\n')
    ops.run("seed", name, seed, spawn=True)
    assert ops.json("get", name, "last", spawn=True)["value"] == 7
    assert ops.json("get", name, "1")["value"] == 16          # by id
    assert ops.run("get", name, "calls", spawn=True).stdout.strip() == "0"

    links = ops.json("attach", name, obj("rollout_v1"), spawn=True)["attached"]
    assert [(r["program"], r["pinned"]) for r in links] == [("rollout_v1", True)]
    assert os.path.exists(f"{ops.bpffs}/links/{name}/rollout_v1")

    # The attaching process exited: the pinned program counts the target's syscalls,
    # read from other processes, even while a writer holds the store's lock.
    first = ops.calls(name)
    assert wait_for(lambda: ops.calls(name) > first)
    with open(os.path.join(ops.root, name, "lock"), "rb+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        listed = ops.json("ls", spawn=True)["stores"]
        assert ops.calls(name) > 0
        fcntl.flock(lock, fcntl.LOCK_UN)
    assert len(listed) == 1
    s = listed[0]
    assert (s["name"], s["pid"], s["alive"], s["pages"], s["used"]) == (name, pid, True, 1, 24)
    assert [p["program"] for p in s["programs"]] == ["rollout_v1"]
    table = ops.run("ls", spawn=True).stdout
    assert name in table and "rollout_v1" in table and "24/32768" in table

    dump = ops.json("dump", name, spawn=True)
    assert [(k["key"], k["name"], k["size"]) for k in dump["keys"]] == \
        [(1, "v1_only", 8), (2, "calls", 8), (3, "last", 8)]
    assert dump["keys"][1]["value"] > 0
    assert "v1_only" in ops.run("dump", name, spawn=True).stdout

    dry = ops.json("rollout", name, obj("rollout_v2"), EXAMPLES / "v2.toml", "--dry-run", spawn=True)
    assert dry["dry_run"] is True
    changes = {(c["change"], c["name"]) for c in dry["changes"]}
    assert {("removed", "v1_only"), ("added", "inherited"), ("kept", "calls")} <= changes
    assert dry["space"]["free_before"] == 4096 - 24 and dry["space"]["pages_during"] == 1
    assert "space:" in ops.run("rollout", name, obj("rollout_v2"), EXAMPLES / "v2.toml", "--dry-run").stdout
    assert [k["key"] for k in ops.json("dump", name)["keys"]] == [1, 2, 3]   # nothing changed

    # The real rollout, v1 -> v2, while another process keeps reading the counter.
    before = ops.calls(name)
    with Forked(_sample_counter, ops.root, name) as sampler:
        seen = [int(sampler.readline())]
        out = ops.json("rollout", name, obj("rollout_v2"), EXAMPLES / "v2.toml", spawn=True)
        after = ops.calls(name)
        while seen[-1] <= after:                        # the same reader sees v2 counting
            seen.append(int(sampler.readline(timeout=60)))
        sampler.kill()
        sampler.communicate()
    assert out["dry_run"] is False
    assert [r["program"] for r in out["links"]] == ["rollout_v2"]
    assert after >= before and seen == sorted(seen) and seen[0] >= before, (before, seen, after)
    assert wait_for(lambda: ops.calls(name) > after)
    dump = ops.json("dump", name, spawn=True)
    assert [(k["key"], k["name"]) for k in dump["keys"]] == [(2, "calls"), (3, "last"), (4, "inherited")]
    assert [r["program"] for r in dump["links"]] == ["rollout_v2"]
    assert not os.path.exists(f"{ops.bpffs}/links/{name}/rollout_v1")

    detached = ops.json("detach", name, spawn=True)["detached"]
    assert [r["program"] for r in detached] == ["rollout_v2"]
    still = ops.calls(name)
    time.sleep(0.3)
    assert ops.calls(name) == still                      # nothing counts any more
    assert ops.json("ls")["stores"][0]["programs"] == []

    ops.run("destroy", name, spawn=True)
    assert ops.json("ls")["stores"] == []
    assert "no stores" in ops.run("ls", spawn=True).stdout
    assert os.listdir(ops.root) == [".pins.lock"]     # the root's lock, for creates and gc
    assert not os.listdir(f"{ops.bpffs}/links") and not os.listdir(f"{ops.bpffs}/maps")


@pytest.mark.userspace                 # messages and exit codes: the same on any kernel
def test_errors_are_one_line_with_exit_codes(ops, target, tmp_path):
    name = ops.json("create", "--pid", target.pid, "--object", obj("rollout_v1"),
                    "--name", "errs")["name"]
    assert name == "errs"
    # bad usage: argparse, exit 2
    assert ops.run("put", name, "calls", rc=2, spawn=True).stderr.count("\n") >= 1
    assert ops.run("no-such-command", rc=2).returncode == 2
    assert json.loads(ops.run("get", name, "--json", rc=2).stdout)["kind"] == "usage"
    assert json.loads(ops.run("--json", "bogus", rc=2).stdout)["kind"] == "usage"
    assert ops.run("get", name, "calls", "--js", rc=2).stdout == ""   # no abbreviations
    assert ops.run("create", "--pid", target.pid, rc=2).returncode == 2   # no --object or --map
    # failures: exit 1, one line naming what is wrong
    one_line_error(ops.run("get", "missing", "calls", rc=1, spawn=True), "no store 'missing'")
    one_line_error(ops.run("get", name, "nope", rc=1), "no key named 'nope'")
    res = ops.run("get", name, "nope", "--json", rc=1)           # --json: the error as JSON too
    one_line_error(res, "no key named 'nope'")
    err = json.loads(res.stdout)
    assert "no key named 'nope'" in err["error"] and err["kind"], err
    one_line_error(ops.run("put", name, "calls", "-5", rc=1), "'calls'", "out of range")
    one_line_error(ops.run("put", name, "last", "0x1g", rc=1), "'last'", "integer")
    one_line_error(ops.run("get", name, "2000", rc=1), "outside 0..1023")
    one_line_error(ops.run("attach", name, "/nonexistent.bpf.o", rc=1))
    one_line_error(ops.run("create", "--pid", target.pid, "--object", obj("rollout_v1"),
                           "--name", name, rc=1), "already exists")
    bad = tmp_path / "bad.toml"
    bad.write_text('[values]\ncalls = "many"\n')
    one_line_error(ops.run("seed", name, bad, rc=1), "'calls'")
    assert ops.calls(name) == 0                                 # a failed seed wrote nothing
    one_line_error(ops.run("rollout", name, obj("rollout_v3"), EXAMPLES / "v2.toml", rc=1))
    # raw hex for a key the manifest does not type
    ops.run("put", name, "100", "00ff")
    assert ops.json("get", name, "100")["value"] == "00ff"
    one_line_error(ops.run("put", name, "100", "00", rc=1), "holds 2")
    ops.run("delete", name, "100")
    one_line_error(ops.run("get", name, "100", rc=1))
    ops.run("destroy", name)


def test_gc_removes_the_store_of_a_killed_target(ops, target):
    other = subprocess.Popen(["sh", "-c", LOOP])
    try:
        dead = ops.json("create", "--pid", target.pid, "--object", obj("rollout_v1"), "--name", "dead")["name"]
        live = ops.json("create", "--pid", other.pid, "--object", obj("rollout_v1"), "--name", "live")["name"]
        ops.run("attach", dead, obj("rollout_v1"))
        target.send_signal(signal.SIGKILL)
        target.wait()
        stores = {s["name"]: s for s in ops.json("ls")["stores"]}
        assert stores[dead]["alive"] is False and stores[live]["alive"] is True
        assert [p["program"] for p in stores[dead]["programs"]] == ["rollout_v1"]
        assert "no (" in ops.run("ls").stdout
        one_line_error(ops.run("get", dead, "calls", rc=1), "gc")
        assert ops.json("gc") == {"removed": [dead], "busy": []}
        assert [s["name"] for s in ops.json("ls")["stores"]] == [live]
        assert not os.path.exists(f"{ops.bpffs}/links/{dead}")
        assert ops.calls(live) == 0
        assert ops.json("gc")["removed"] == []
    finally:
        other.kill()
        other.wait()


def _create_slowly(pin: str, name: str, pid: int, root: str, bpffs: str) -> None:
    """In a forked child: create a store on the map pinned at PIN, pausing 1 s after the
    map is chosen and before the state file is written (the window a gc once raced)."""
    import uptrkv.named_store as ns
    real = ns.FileBacking

    def slow(*args, **kwargs):
        print("creating", flush=True)
        time.sleep(1)
        return real(*args, **kwargs)
    ns.FileBacking = slow
    ns.NamedStore.create(pin, name, pid=pid, root=root, pin_root=bpffs).close()


def test_gc_never_unpins_a_map_under_a_store_being_created(ops, target):
    """Store 'dead' pinned the map and its target died; a second process creates 'new' on
    that pin while gc runs.  gc removes 'dead' but must leave the pin: 'new' uses it."""
    other = subprocess.Popen(["sh", "-c", LOOP])
    try:
        ops.run("create", "--pid", other.pid, "--object", obj("rollout_v1"), "--name", "dead")
        pin = json.loads(open(os.path.join(ops.root, "dead", "state.json")).read())["map"]["pin"]
        other.kill()
        other.wait()
        with Forked(_create_slowly, pin, "new", target.pid, ops.root, ops.bpffs) as creator:
            assert creator.readline().strip() == "creating", creator.communicate()
            gc = ops.here_json("gc")                   # waits for the creator's root lock
            out, err = creator.communicate(timeout=120)
            assert creator.returncode == 0, out + err
        assert gc == {"removed": ["dead"], "busy": []}, gc
        assert os.path.exists(pin), "gc unpinned the map of a store being created"
        ops.run("put", "new", "100", "00ff")           # the store works: no manifest, raw hex
        assert ops.json("get", "new", "100")["value"] == "00ff"
        ops.run("destroy", "new")
        assert not os.path.exists(pin)                 # the last store's destroy unpins it
    finally:
        other.kill()
        other.wait()


def test_a_store_whose_map_pin_was_removed_is_pinned_again_or_destroyed(ops, target):
    """The pin removed by hand: the next writer finds the map by its id and pins it again.
    The map itself gone (pin removed, no program holds it): destroy removes the store."""
    ops.run("create", "--pid", target.pid, "--object", obj("rollout_v1"), "--name", "s")
    pin = json.loads(open(os.path.join(ops.root, "s", "state.json")).read())["map"]["pin"]
    ops.run("attach", "s", obj("rollout_v1"))        # a program holds the map
    os.unlink(pin)
    assert ops.json("get", "s", "calls")["value"] >= 0   # a reader: by id, no pin made
    assert not os.path.exists(pin)
    ops.run("put", "s", "last", "3")                   # a writer pins it again
    assert os.path.exists(pin)
    ops.run("detach", "s")
    os.unlink(pin)                                     # nothing holds the map now: it is freed
    from uptrkv.loader import MapHandle
    map_id = json.loads(open(os.path.join(ops.root, "s", "state.json")).read())["map"]["id"]
    assert wait_for(lambda: not _map_exists(MapHandle, map_id)), "the map outlived its last holder"
    one_line_error(ops.run("get", "s", "calls", rc=1), "is gone", "destroy")
    ops.run("destroy", "s")
    assert ops.json("ls")["stores"] == []


def _map_exists(handles, map_id: int) -> bool:
    try:
        handles.from_id(map_id).close()
        return True
    except OSError:
        return False


def test_gc_keeps_a_store_whose_state_it_cannot_read_and_goes_on(ops, target):
    other = subprocess.Popen(["sh", "-c", LOOP])
    try:
        ops.run("create", "--pid", other.pid, "--object", obj("rollout_v1"), "--name", "dead")
        other.kill()
        other.wait()
        bad = os.path.join(ops.root, "odd")
        os.mkdir(bad, 0o700)
        with open(os.path.join(bad, "state.json"), "w") as f:
            f.write('{"format": 1}')
        os.chmod(os.path.join(bad, "state.json"), 0o600)
        out = ops.json("gc")
        assert out["removed"] == ["dead"], out
        assert [k["name"] for k in out["busy"]] == ["odd"] and "'target'" in out["busy"][0]["reason"], out
        assert os.path.isdir(bad)
    finally:
        other.kill()
        other.wait()


def test_a_creator_killed_before_its_state_leaves_no_pin_after_gc(ops, target):
    """Killed after pinning the map and before its state file names the pin: gc removes
    the unfinished store and unpins the map (recorded in 'newpin' before the pin)."""
    code, out, err = ops.forked("create", "--pid", target.pid, "--object", obj("rollout_v1"),
                                "--name", "k", kill_at="state.written")
    assert code == -signal.SIGKILL, out + err
    assert os.listdir(os.path.join(ops.bpffs, "maps")), "the creator pinned nothing"
    assert ops.json("gc")["removed"] == ["k"]
    assert os.listdir(os.path.join(ops.bpffs, "maps")) == []


def test_a_writer_makes_the_maps_directory_again(ops, target):
    ops.run("create", "--pid", target.pid, "--object", obj("rollout_v1"), "--name", "m")
    ops.run("attach", "m", obj("rollout_v1"))          # a program holds the map
    shutil.rmtree(os.path.join(ops.bpffs, "maps"))
    ops.run("put", "m", "100", "00ff")                # a writer: it pins the map again
    assert ops.json("get", "m", "100")["value"] == "00ff"
    assert os.listdir(os.path.join(ops.bpffs, "maps"))
    ops.run("destroy", "m")


def test_known_keys_stay_held_across_processes_and_roll_out(ops, target):
    """known_v1 resolves its keys' places at load: the holds live in the state file, so a
    later process cannot move or delete them; a rollout to known_v2 (key 3 grows)
    moves the holds to the new places."""
    name = ops.json("create", "--pid", target.pid, "--object", obj("known_v1"), "--name", "known")["name"]
    ops.run("attach", name, obj("known_v1"))
    assert wait_for(lambda: ops.calls(name) > 0)
    one_line_error(ops.run("delete", name, "calls", rc=1), "known key")
    before = ops.calls(name)
    out = ops.json("rollout", name, obj("known_v2"))
    assert ("resized", "last") in {(c["change"], c["name"]) for c in out["changes"]}
    assert ops.calls(name) >= before
    assert wait_for(lambda: ops.calls(name) > before)
    last = ops.json("get", name, "last")
    assert last["size"] == 16
    one_line_error(ops.run("delete", name, "last", rc=1), "known key")
    ops.run("detach", name)
    ops.run("delete", name, "last")
    ops.run("destroy", name)


def test_a_rollout_killed_at_any_step_leaves_a_version_running_and_the_store_repaired(ops, target, tmp_path):
    """`uptrkv rollout` known_v1 -> known_v2 (key 'last' grows from 8 to 16 bytes, at a place
    v2 resolves at load) killed by SIGKILL at each step it reaches.  Afterwards: some
    version is pinned and counting; the next writer's open() repairs the store (the move
    rolled forward once it was journaled) and the next writer command settles the
    manifest in force; and if v2 is attached, 'last' is published where v2 writes it (its
    second half follows the counter).  The rollouts run as processes forked from this one
    (conftest.Forked: no interpreter start per kill); the commands around them run in this
    process (the workflow test covers them as processes)."""
    from uptrkv.named_store import NamedStore

    def calls(name):
        return ops.here_json("get", name, "calls")["value"]

    def make(name):
        ops.here("create", "--pid", target.pid, "--object", obj("known_v1"), "--name", name)
        ops.here("attach", name, obj("known_v1"))
        assert wait_for(lambda: calls(name) > 0)

    make("steps")
    log = tmp_path / "steps.log"
    code, out, err = ops.forked("rollout", "steps", obj("known_v2"), kill_log=str(log))
    assert code == 0, out + err
    ops.here("destroy", "steps")
    steps, seen = [], {}
    for step in log.read_text().split():
        seen[step] = seen.get(step, 0) + 1
        steps.append(f"{step}:{seen[step]}")
    assert any(s.startswith("convert.placed") for s in steps), steps
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    results = []
    for i, step in enumerate(steps):
        name = f"r{i}"
        make(name)
        code, out, err = ops.forked("rollout", name, obj("known_v2"), kill_at=step)
        assert code == -signal.SIGKILL, f"{step}: exit {code}\n{out}{err}"
        pinned = [r for r in ops.here_json("links", name)["attached"] if r["pinned"]]
        assert pinned, f"killed at {step}: no version attached"
        with NamedStore.open(name, root=ops.root) as s:            # the next writer repairs
            assert s.verify() == [], (step, s.verify())
            repairs = list(s.repairs)
        # The next writer command settles the record: the manifest in force is the one whose
        # sizes the keys have, so a typed put of 'last' works either way.
        ops.here("seed", name, empty)
        state = json.loads(open(os.path.join(ops.root, name, "state.json")).read())
        assert state.get("rollout") is None
        before = calls(name)
        assert wait_for(lambda: calls(name) > before), f"killed at {step}: nothing counts"
        v2 = any(r["object"].endswith("known_v2.bpf.o") for r in pinned)
        with NamedStore.open(name, root=ops.root, readonly=True) as r:
            size = r.size(3)
            if v2 and size == 16:
                n = int.from_bytes(r.get(3)[8:], "little")
                assert wait_for(lambda: int.from_bytes(r.get(3)[8:], "little") > n), \
                    f"killed at {step}: v2 does not write 'last' where it is published"
        versions = {p["program"].split("-")[0] for p in pinned}
        # One version attached: the store holds its layout of 'last'.  Both (killed in the
        # switch): either, and the other version's place stays held (verify() above).
        if versions == {"known_v1"}:
            assert size == 8, f"killed at {step}: v1 alone but 'last' rolled forward"
        elif versions == {"known_v2"}:
            assert size == 16, f"killed at {step}: v2 alone but 'last' rolled back"
        else:
            assert size in (8, 16)
        ops.here("put", name, "last", "5" if size == 8 else "00" * 16)   # typed by the manifest in force
        results.append((step, [p["program"] for p in pinned], size, len(repairs)))
        ops.here("destroy", name)
    print("\n".join(f"{s}: attached {p}, last {n} B, {r} repair(s)" for s, p, n, r in results))


def test_gc_deletes_nothing_that_is_not_a_store(ops, target, tmp_path):
    """A wrong --root (not tmpfs, or not private) is refused; a directory of the root that
    holds anything but a store's files is kept, and said so."""
    wrong = tmp_path / "projects"
    wrong.mkdir()
    (wrong / "notes.txt").write_text("keep me")
    one_line_error(ops.run("gc", "--root", tmp_path, rc=1), "not on tmpfs")
    assert (wrong / "notes.txt").read_text() == "keep me"
    os.makedirs(ops.root, exist_ok=True)
    odd = os.path.join(ops.root, "projects")
    os.mkdir(odd, 0o700)
    with open(os.path.join(odd, "notes.txt"), "w") as f:
        f.write("keep me")
    out = ops.json("gc")
    assert out["removed"] == [] and [k["name"] for k in out["busy"]] == ["projects"]
    assert "not a store directory" in out["busy"][0]["reason"]
    assert open(os.path.join(odd, "notes.txt")).read() == "keep me"



# Run in a new interpreter, so that nothing this pytest process imported before
# (ops.here() runs the CLI in-process) hides a child's imports.
FORKED_IMPORTS = r"""
import json, sys
from conftest import Forked

def child(*argv):
    from uptrkv.cli import main
    before = set(sys.modules)
    code = main(list(argv))
    new = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in ("uptrkv", "elftools"))
    print(json.dumps({"code": code, "new": new}), flush=True)

for argv in json.loads(sys.argv[1]):
    p = Forked(child, *argv)
    out, err = p.communicate(timeout=120)
    print(json.dumps({"argv": argv, "rc": p.returncode, "out": out, "err": err}), flush=True)
"""


@pytest.mark.nokernel
def test_a_forked_command_imports_nothing_the_parent_has_not(tmp_path):
    """Forked children start with every uptrkv module imported, in a process that had
    imported none: on the debug kernel in TCG, a child's cold import of the ops modules
    took longer than its 300 s limit when test_ops_cli ran first."""
    root = tempfile.mkdtemp(prefix="uptrkv-test-", dir="/dev/shm")
    junk = tmp_path / "junk.bpf.o"
    junk.write_bytes(b"not an ELF object" * 8)
    commands = [(["ls", "--root", root, "--json"], 0),
                (["get", "missing", "calls", "--root", root], 1),
                (["attach", "missing", str(junk), "--root", root], 1),
                # reads the object with pyelftools (imported lazily), then fails on it
                (["create", "--pid", "1", "--object", str(junk), "--root", root,
                  "--bpffs", str(tmp_path / "bpffs")], 1)]
    try:
        res = subprocess.run([sys.executable, "-c", FORKED_IMPORTS, json.dumps([a for a, _ in commands])],
                             env=dict(os.environ, PYTHONPATH=f"{REPO / 'tests'}:{REPO}"), cwd=str(REPO),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        runs = [json.loads(line) for line in res.stdout.splitlines()]
        assert len(runs) == len(commands), res.stdout
        for run, (argv, code) in zip(runs, commands):
            assert run["rc"] == 0, f"{argv}: the child failed\n{run['err']}"
            got = json.loads(run["out"].splitlines()[-1])
            assert got["code"] == code, f"{argv}: exit {got['code']}, not {code}\n{run['err']}"
            assert got["new"] == [], f"{argv}: the child imported {got['new']}"
    finally:
        shutil.rmtree(root, ignore_errors=True)
