"""The suite as kselftest: KTAP v1 output, kselftest exit codes, the kernel's runner.

``ksft/run.sh`` runs pytest with the ``uptrkv_ktap`` plugin; ``make
kselftest-install`` lays out collection ``uptrkv`` for the kernel's own
``run_kselftest.sh`` (copied from the fetched kernel source), which these
tests run for real, on a sample with a passing, a failing and a skipped test
as well as on one module of the suite.  A run that is no test outcome (a
usage error, say) must exit 1 with a ``Bail out!``, never 4, which kselftest
reads as a skip.
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


def ksft(*args) -> subprocess.CompletedProcess:
    """ksft/run.sh ARGS, its stdout (the KTAP) apart from its stderr."""
    return subprocess.run([TOP / "ksft" / "run.sh", *args], capture_output=True, text=True,
                          timeout=600)


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

    only_skip = ksft(sample, "--rootdir", sample.parent, "-k", "skip")
    assert only_skip.returncode == KSFT_SKIP, only_skip.stdout
    assert only_skip.stdout.splitlines() == [
        "KTAP version 1", "1..1", f"ok 1 {name}test_skip # SKIP no such kernel feature",
        "# Totals: pass:0 fail:0 xfail:0 xpass:0 skip:1 error:0"], only_skip.stdout
    passing = ksft(sample, "--rootdir", sample.parent, "-k", "pass or skip")
    assert passing.returncode == KSFT_PASS, passing.stdout
    assert passing.stdout.splitlines()[1:-1] == [
        "1..2", f"ok 1 {name}test_pass", f"ok 2 {name}test_skip # SKIP no such kernel feature"]
    failing = ksft(sample, "--rootdir", sample.parent, "-k", "fail")
    assert failing.returncode == KSFT_FAIL, failing.stdout
    assert failing.stdout.splitlines()[-2:] == [
        f"not ok 1 {name}test_fail", "# Totals: pass:0 fail:1 xfail:0 xpass:0 skip:0 error:0"]


def test_xfail_and_xpass(tmp_path):
    """pytest's expected failures: one that fails is an XFAIL, one that passes an
    XPASS (non-strict: still a pass), each counted where kselftest counts it."""
    module = tmp_path / "test_xf.py"
    module.write_text("import pytest\n"
                      "@pytest.mark.xfail(reason='known bug')\ndef test_xfail():\n    assert 0\n"
                      "@pytest.mark.xfail(reason='fixed upstream')\ndef test_xpass():\n    pass\n"
                      "@pytest.fixture\ndef bad():\n    yield\n    raise RuntimeError('teardown')\n"
                      "@pytest.mark.xfail(reason='flaky teardown')\n"
                      "def test_xpass_then_teardown_error(bad):\n    pass\n")
    res = ksft(module, "--rootdir", tmp_path)
    assert res.returncode == KSFT_PASS, res.stdout
    # The third passed, then erred in teardown: pytest's verdict for that, XFAIL.
    assert res.stdout.splitlines() == [
        "KTAP version 1", "1..3", "ok 1 test_xf.py::test_xfail # XFAIL known bug",
        "ok 2 test_xf.py::test_xpass # XPASS fixed upstream",
        "ok 3 test_xf.py::test_xpass_then_teardown_error # XFAIL flaky teardown",
        "# Totals: pass:0 fail:0 xfail:2 xpass:1 skip:0 error:0"], res.stdout


def test_collection_error_bails_out(tmp_path):
    broken = tmp_path / "test_broken.py"
    broken.write_text("import no_such_module_here\n")
    res = ksft(broken)
    assert res.returncode == KSFT_FAIL, res.stdout
    assert res.stdout.splitlines()[-1] == "Bail out! the tests could not be collected", res.stdout
    assert "# E   ModuleNotFoundError: No module named 'no_such_module_here'" in res.stdout


def test_module_that_skips_itself_is_a_skip(tmp_path):
    # pytest.skip(allow_module_level=True) leaves nothing to collect (pytest
    # exit 5), but the module said why: kselftest's whole-test skip, not a
    # failure of the selection.
    module = tmp_path / "test_modskip.py"
    module.write_text("import pytest\npytest.skip('no such kernel feature', allow_module_level=True)\n"
                      "def test_x():\n    pass\n")
    res = ksft(module, "--rootdir", tmp_path)
    assert res.returncode == KSFT_SKIP, res.stdout
    assert res.stdout.splitlines() == [
        "KTAP version 1", "1..0 # SKIP test_modskip.py: no such kernel feature",
        "# Totals: pass:0 fail:0 xfail:0 xpass:0 skip:0 error:0"], res.stdout
    # Beside a module whose tests a -k deselected, it is the selection again.
    other = tmp_path / "test_other.py"
    other.write_text("def test_fail():\n    assert 0\n")
    res = ksft(module, other, "--rootdir", tmp_path, "-k", "no_such_test")
    assert res.returncode == KSFT_FAIL, res.stdout
    assert res.stdout.splitlines()[-1] == "Bail out! no tests were selected (pytest exit 5)"


INTERRUPTING = "def test_a():\n    pass\n\ndef test_b():\n    raise KeyboardInterrupt\n"
BROKEN_HOOK = "def pytest_collection_finish(session):\n    raise RuntimeError('hook broke')\n"


@pytest.mark.parametrize("args, conftest, bail", [
    (["no_such_test.py"], None, "usage error: file or directory not found: "),
    (["test_ksft_sample.py", "-k", "pass and"], None,
     "usage error: Wrong expression passed to '-k': pass and"),
    (["test_ksft_sample.py", "--no-such-option"], None,
     "usage error, reported on stderr (pytest exit 4)"),
    (["test_ksft_sample.py", "-k", "no_such_test"], None, "no tests were selected (pytest exit 5)"),
    (["test_interrupting.py"], None, "interrupted: KeyboardInterrupt (pytest exit 2)"),
    (["test_ksft_sample.py"], BROKEN_HOOK,
     "pytest internal error: RuntimeError: hook broke (pytest exit 3)"),
    (["test_ksft_sample.py"], "import no_such_module_here\n",
     "usage error, reported on stderr (pytest exit 4)"),
], ids=["no-such-path", "bad-k", "bad-option", "empty-selection", "interrupted",
        "internal-error", "conftest-import-error"])
def test_no_test_outcome_bails_out(sample, args, conftest, bail):
    # pytest's own code would be 4 (USAGE_ERROR) for several: kselftest's SKIP.
    (sample.parent / "test_interrupting.py").write_text(INTERRUPTING)
    if conftest:
        (sample.parent / "conftest.py").write_text(conftest)
    res = ksft("--rootdir", sample.parent, sample.parent / args[0], *args[1:])
    lines = res.stdout.splitlines()
    assert res.returncode == KSFT_FAIL, (res.stdout, res.stderr)
    assert lines[0] == "KTAP version 1", res.stdout
    # The totals, then the reason; KTAP has nothing follow a Bail out!.
    assert lines[-2].startswith("# Totals: "), res.stdout
    assert lines[-1].startswith("Bail out! " + bail), res.stdout
    assert sum(ln.startswith("Bail out!") for ln in lines) == 1, res.stdout


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

    # Three more tests in the collection, made the way the install makes its own.
    coll = dest / "uptrkv"
    # sample_usage: a usage error, which pytest alone would exit 4 (SKIP) for.
    for name, select in (("sample_fail", "pass or fail"), ("sample_skip", "skip"),
                         ("sample_usage", "pass and")):
        (coll / "tree" / "tests" / sample.name).write_text(sample.read_text())
        exe = coll / name
        exe.write_text(f'#!/bin/sh\nexec "$(dirname "$0")/run_pytest" tests/{sample.name} -k "{select}"\n')
        exe.chmod(0o755)
        with open(dest / "kselftest-list.txt", "a") as f:
            f.write(f"uptrkv:{name}\n")

    res = run([dest / "run_kselftest.sh", "-t", "uptrkv:test_manifest",
               "-t", "uptrkv:sample_fail", "-t", "uptrkv:sample_skip", "-t", "uptrkv:sample_usage"])
    lines = res.stdout.splitlines()
    results = [ln for ln in lines if ln.startswith(("ok ", "not ok "))]
    assert results == ["ok 1 selftests: uptrkv: test_manifest",
                       "not ok 2 selftests: uptrkv: sample_fail # exit=1",
                       "ok 3 selftests: uptrkv: sample_skip # SKIP",
                       "not ok 4 selftests: uptrkv: sample_usage # exit=1"], res.stdout
    assert any(ln.startswith("# Bail out! usage error: Wrong expression passed to '-k'")
               for ln in lines), res.stdout
    assert res.returncode == KSFT_FAIL, res.stdout
    # Each test's own KTAP is nested in the runner's output as diagnostics.
    assert "# KTAP version 1" in lines
    assert any(ln.startswith("# ok 1 tests/test_manifest.py::") for ln in lines), res.stdout
    assert f"# not ok 2 tests/{sample.name}::test_fail" in lines, res.stdout
    assert "# # Totals: pass:1 fail:1 xfail:0 xpass:0 skip:0 error:0" in lines, res.stdout
    assert "# Totals: pass:1 fail:2 xfail:0 xpass:0 skip:1 error:0" in lines, res.stdout  # the runner's

    ok = run([dest / "run_kselftest.sh", "-t", "uptrkv:test_manifest"])
    assert ok.returncode == KSFT_PASS, ok.stdout
