"""KERNEL_SRC trees: vm/kernel-source.sh patches a tree once, and refuses one
that carries only part of the series (a cut-short apply would otherwise be
built as if it were patched).

The tree here is a copy of just the files the series touches, taken from a
tree kernel-source.sh already unpacked and patched (skipped before the first
kernel build has fetched one).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.nokernel

TOP = Path(__file__).resolve().parent.parent
SOURCE = TOP / "vm" / "kernel-source.sh"
PATCHES = sorted((TOP / "vm" / "patches").glob("*.patch"))


def patched_tree() -> Path:
    cache = os.environ.get("UPTRKV_CACHE", "/var/cache/uptrkv")
    for series in sorted(glob.glob(f"{cache}/src/*/linux-source-*/.uptrkv-series")):
        carried = sorted(p.name for p in Path(series).glob("*.patch"))
        if carried == [p.name for p in PATCHES]:
            return Path(series).parent
    pytest.skip(f"no tree under {cache}/src carries this series yet (the first kernel build unpacks one)")


@pytest.fixture
def tree(tmp_path):
    """A patched copy of the Makefile and every file the series touches."""
    src, dst = patched_tree(), tmp_path / "linux"
    touched = {"Makefile"}
    for p in PATCHES:
        touched |= set(re.findall(r"^\+\+\+ b/(\S+)", p.read_text(), re.M))
    for rel in touched:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / rel, dst / rel)
    return dst


def kernel_source(tree: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, KERNEL_SRC=str(tree))
    return subprocess.run(["bash", SOURCE], env=env, capture_output=True, text=True, timeout=120)


def patch(tree: Path, p: Path, *args: str) -> None:
    subprocess.run(["patch", "-d", tree, "-p1", "-s", *args], stdin=p.open(), check=True)


def test_patched_tree_is_used_as_is(tree):
    res = kernel_source(tree)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(tree)
    assert "already applied" in res.stderr


def test_unpatched_tree_gets_the_series_once(tree):
    for p in reversed(PATCHES):
        patch(tree, p, "-R")
    first = kernel_source(tree)
    assert first.returncode == 0, first.stderr
    assert [f"applied {p.name}" in first.stderr for p in PATCHES] == [True] * len(PATCHES)
    again = kernel_source(tree)
    assert again.returncode == 0 and "already applied" in again.stderr, again.stderr


@pytest.mark.skipif(len(PATCHES) < 2, reason="a series of one patch cannot be partly applied")
def test_partly_patched_tree_is_refused(tree):
    patch(tree, PATCHES[-1], "-R")
    before = {p: p.read_bytes() for p in tree.rglob("*") if p.is_file()}
    res = kernel_source(tree)
    assert res.returncode == 1
    assert "carries only part of the series" in res.stderr and PATCHES[0].name in res.stderr
    assert {p: p.read_bytes() for p in tree.rglob("*") if p.is_file()} == before, "the tree was changed"
