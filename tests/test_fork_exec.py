"""fork() and exec() with a live store, in real subprocesses."""

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import NEG

HELPERS = Path(__file__).resolve().parent / "helpers"


def run(script, *args):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    proc = subprocess.run([sys.executable, str(HELPERS / script), *args], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_fork_child_cannot_use_or_close_the_parents_store(kernel, copy_path, tmp_path):
    r = run("fork_child.py", copy_path, str(tmp_path / "child.json"))
    for call, outcome in r["child"].items():
        assert outcome.startswith("StoreOwnerError"), (call, outcome)
        assert f"belongs to process" in outcome
    assert "owner's store is unchanged" in r["child"]["close"]
    assert r["child_status"] == 0                     # __del__ at the child's exit did not raise
    assert r["raw_in_child"] == "00" * 8              # the child's copy of the page is wiped
    assert r["own_store_in_child"] is True            # and the child can have a store of its own
    assert r["bpf_get_after"] == [8, "parent!!"]      # the parent's element survived the child
    assert r["get_after"] == "parent!!"               # the child's raw write stayed in the child
    assert r["pages_after"] == 8 and r["bpf_page7"] == 4096   # and it still adds pages


def test_exec_leaves_the_store_to_bpf_only(kernel, copy_path, bpffs):
    r = run("exec_owner.py", copy_path, os.path.join(bpffs, "exec_map"))
    assert r["bpf_get"] == [11, "before exec"]        # the element and its pinned pages survive exec
    assert "already has a store" in r["new_store"]    # the new image cannot register another one
    assert r["dropped"] is True                       # until it deletes the orphaned element
    assert r["bpf_get_after_drop"] == NEG["ESRCH"]
    assert r["fresh"] == "fresh"


def test_libc_fork_child_cannot_register_pages(kernel, copy_path):
    # ctypes' libc fork() runs none of Python's at-fork hooks: the pid check catches it.
    r = run("libc_fork_child.py", copy_path)
    assert r["child"]["forked_flag_before"] is False          # the hook really did not run
    for call in ("put_new_page", "ensure_pages", "compact"):
        assert r["child"][call].startswith("StoreOwnerError"), (call, r["child"][call])
        assert "belongs to process" in r["child"][call]
    assert r["child"]["pages"] == 1
    assert r["bpf_get_after"] == [8, "parent!!"]             # the parent's element is intact
    assert r["pages_after"] == 1
    assert r["pages_grown"] == 2 and r["bpf_new_page"] == 4000
