"""KERNEL_SRC trees: vm/kernel-source.sh applies the series once, takes a tree
that carries all of it as it is, and refuses, without changing it, a tree that
carries part of it or conflicts with it.

The script runs from a copy of vm/ whose patches/ is a small synthetic series
(2 patches, the second changing a line the first adds and creating a file)
against a synthetic tree, so no kernel source is needed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.nokernel

TOP = Path(__file__).resolve().parent.parent

VERIFIER = "int check(void)\n{\n\treturn 0;\n}\n"
PATCH_1 = """\
--- a/kernel/bpf/verifier.c
+++ b/kernel/bpf/verifier.c
@@ -1,4 +1,5 @@
 int check(void)
 {
+\tint uptr = 1;
 \treturn 0;
 }
"""
PATCH_2 = """\
--- a/kernel/bpf/verifier.c
+++ b/kernel/bpf/verifier.c
@@ -1,5 +1,5 @@
 int check(void)
 {
-\tint uptr = 1;
+\tint uptr = 2;
 \treturn 0;
 }
--- /dev/null
+++ b/tools/testing/selftests/bpf/progs/new_test.c
@@ -0,0 +1 @@
+/* a new selftest */
"""


@pytest.fixture
def script(tmp_path):
    """kernel-source.sh in a copy of vm/ with the synthetic series."""
    vm = tmp_path / "vm"
    (vm / "patches").mkdir(parents=True)
    shutil.copy(TOP / "vm" / "kernel-source.sh", vm)
    (vm / "patches" / "0001-first.patch").write_text(PATCH_1)
    (vm / "patches" / "0002-second.patch").write_text(PATCH_2)
    return vm / "kernel-source.sh"


@pytest.fixture
def tree(tmp_path):
    t = tmp_path / "linux"
    (t / "kernel" / "bpf").mkdir(parents=True)
    (t / "Makefile").write_text("# a kernel tree\n")
    (t / "kernel" / "bpf" / "verifier.c").write_text(VERIFIER)
    return t


def run(script: Path, tree: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, KERNEL_SRC=str(tree))
    return subprocess.run(["bash", script], env=env, capture_output=True, text=True, timeout=60)


def snapshot(tree: Path) -> dict[str, bytes]:
    return {str(p.relative_to(tree)): p.read_bytes() for p in tree.rglob("*") if p.is_file()}


def patch(tree: Path, text: str) -> None:
    subprocess.run(["patch", "-d", tree, "-p1", "-s"], input=text, text=True, check=True)


NEW_TEST = "tools/testing/selftests/bpf/progs/new_test.c"


def test_clean_tree_gets_the_series_once(script, tree):
    first = run(script, tree)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == str(tree)
    assert "applied 0001-first.patch" in first.stderr and "applied 0002-second.patch" in first.stderr
    assert "int uptr = 2;" in (tree / "kernel/bpf/verifier.c").read_text()
    assert (tree / NEW_TEST).is_file()
    again = run(script, tree)          # the second patch rewrites the first one's line
    assert again.returncode == 0 and "already applied" in again.stderr, again.stderr


def test_tree_with_part_of_the_series_is_refused_unchanged(script, tree):
    patch(tree, PATCH_1)
    before = snapshot(tree)
    res = run(script, tree)
    assert res.returncode == 1
    assert "neither reverts nor applies as a whole (0001-first.patch does not apply" in res.stderr
    assert snapshot(tree) == before, "the tree was changed"


def test_conflicting_tree_is_refused_before_any_patch(script, tree):
    # A stray copy of the file the second patch creates (say, left untracked
    # by `git checkout .`): patch 1 would apply and then patch 2 fail.
    (tree / NEW_TEST).parent.mkdir(parents=True)
    (tree / NEW_TEST).write_text("/* stray */\n")
    before = snapshot(tree)
    res = run(script, tree)
    assert res.returncode == 1
    assert "0002-second.patch does not apply" in res.stderr
    assert snapshot(tree) == before, "the tree was changed"
