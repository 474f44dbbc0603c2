"""The suite as kselftest: KTAP v1 output, kselftest exit codes, the kernel's runner.

``ksft/run.sh`` runs pytest with the ``uptrkv_ktap`` plugin; ``make
kselftest-install`` lays out collection ``uptrkv`` for the kernel's own
``run_kselftest.sh`` (copied from the fetched kernel source), which these
tests run for real, on a sample with a passing, a failing and a skipped test
as well as on one module of the suite.
"""

from __future__ import annotations

import glob
import os
import subprocess
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parent.parent
KSFT_PASS, KSFT_FAIL, KSFT_SKIP = 0, 1, 4

SAMPLE = '''
import pytest

def test_pass():
    pass

def test_fail():
    assert 1 + 1 == 3, "arithmetic"

def test_skip():
    pytest.skip("no such kernel feature")
'''

pytestmark = pytest.mark.nokernel


def run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=600, **kw)


@pytest.fixture
def sample(tmp_path) -> Path:
    path = tmp_path / "test_ksft_sample.py"
    path.write_text(SAMPLE)
    return path


def test_ktap_output_and_exit_codes(sample):
    # The sample lies outside the checkout: name its directory the rootdir, or
    # pytest derives one (and the test names) from wherever the checkout is.
    res = run([TOP / "ksft" / "run.sh", sample, "--rootdir", sample.parent])
    lines = res.stdout.splitlines()
    assert res.returncode == KSFT_FAIL, res.stdout
    assert lines[:2] == ["KTAP version 1", "1..3"], res.stdout
    results = [ln for ln in lines if ln.startswith(("ok ", "not ok "))]
    name = "test_ksft_sample.py::"
    assert results == [f"ok 1 {name}test_pass", f"not ok 2 {name}test_fail",
                       f"ok 3 {name}test_skip # SKIP no such kernel feature"], res.stdout
    # The failure's details are diagnostics, before its result line.
    fail_at = lines.index(f"not ok 2 {name}test_fail")
    assert any("arithmetic" in ln and ln.startswith("# ") for ln in lines[:fail_at]), res.stdout
    assert lines[-1] == "# Totals: pass:1 fail:1 xfail:0 xpass:0 skip:1 error:0"

    only_skip = run([TOP / "ksft" / "run.sh", sample, "--rootdir", sample.parent, "-k", "skip"])
    assert only_skip.returncode == KSFT_SKIP, only_skip.stdout
    assert "1..1" in only_skip.stdout.splitlines()
    passing = run([TOP / "ksft" / "run.sh", sample, "--rootdir", sample.parent, "-k", "pass or skip"])
    assert passing.returncode == KSFT_PASS, passing.stdout


def test_collection_error_bails_out(tmp_path):
    broken = tmp_path / "test_broken.py"
    broken.write_text("import no_such_module_here\n")
    res = run([TOP / "ksft" / "run.sh", broken])
    assert res.returncode == KSFT_FAIL, res.stdout
    assert "Bail out! the tests could not be collected" in res.stdout


def fetched_kernel_source() -> dict:
    """KSFT_SRC of a tree vm/kernel-source.sh already unpacked, else let the install fetch one."""
    cache = os.environ.get("UPTRKV_CACHE", "/var/cache/uptrkv")
    trees = sorted(glob.glob(f"{cache}/src/*/linux-source-*/tools/testing/selftests/run_kselftest.sh"))
    env = dict(os.environ)
    if trees:
        env["KSFT_SRC"] = str(Path(trees[-1]).parents[3])
    return env


def test_kernel_runner_runs_installed_collection(tmp_path, sample):
    dest = tmp_path / "kselftest"
    inst = run(["make", "-s", "-C", TOP, "kselftest-install", f"INSTALL_PATH={dest}"],
               env=fetched_kernel_source())
    assert inst.returncode == 0, inst.stdout
    assert (dest / "run_kselftest.sh").is_file() and (dest / "kselftest" / "runner.sh").is_file()
    listed = (dest / "kselftest-list.txt").read_text().split()
    modules = sorted(p.stem for p in (TOP / "tests").glob("test_*.py"))
    assert listed == [f"uptrkv:{m}" for m in modules]

    # Two more tests in the collection, made the way the install makes its own.
    coll = dest / "uptrkv"
    for name, select in (("sample_fail", "pass or fail"), ("sample_skip", "skip")):
        (coll / "tree" / "tests" / sample.name).write_text(sample.read_text())
        exe = coll / name
        exe.write_text(f'#!/bin/sh\nexec "$(dirname "$0")/run_pytest" tests/{sample.name} -k "{select}"\n')
        exe.chmod(0o755)
        with open(dest / "kselftest-list.txt", "a") as f:
            f.write(f"uptrkv:{name}\n")

    res = run([dest / "run_kselftest.sh", "-t", "uptrkv:test_manifest",
               "-t", "uptrkv:sample_fail", "-t", "uptrkv:sample_skip"])
    lines = res.stdout.splitlines()
    results = [ln for ln in lines if ln.startswith(("ok ", "not ok "))]
    assert results == ["ok 1 selftests: uptrkv: test_manifest",
                       "not ok 2 selftests: uptrkv: sample_fail # exit=1",
                       "ok 3 selftests: uptrkv: sample_skip # SKIP"], res.stdout
    assert res.returncode == KSFT_FAIL, res.stdout
    # Each test's own KTAP is nested in the runner's output as diagnostics.
    assert "# KTAP version 1" in lines
    assert any(ln.startswith("# ok 1 tests/test_manifest.py::") for ln in lines), res.stdout
    assert f"# not ok 2 tests/{sample.name}::test_fail" in lines, res.stdout
    assert "# Totals: pass:1 fail:1 xfail:0 xpass:0 skip:1 error:0" in lines, res.stdout

    ok = run([dest / "run_kselftest.sh", "-t", "uptrkv:test_manifest"])
    assert ok.returncode == KSFT_PASS, ok.stdout
