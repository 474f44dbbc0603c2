"""Run pytest, report the run as KTAP v1 and exit with kselftest's codes.

``python -m uptrkv_ktap [pytest args]`` (this directory on PYTHONPATH;
ksft/run.sh does it) runs pytest in process with the reporter below as a
plugin and its terminal reporter off.  Each collected test becomes one KTAP
result line, in the order it ran; failure details and skip reasons become
``#`` diagnostic lines.  Once pytest has returned, ``verdict`` turns its exit
code and what the reporter saw into kselftest's: 0 when every test passed
(some may have been skipped), 4 when every test was skipped (the kernel
cannot host a store, say), and 1 when any failed -- or when the run was no
test outcome at all (a usage error, collection errors, an internal error,
an interruption, a selection of no tests), which a ``Bail out!`` line after
the totals explains.
"""

from __future__ import annotations

import sys

import pytest
from pytest import ExitCode

KSFT_PASS, KSFT_FAIL, KSFT_SKIP = 0, 1, 4


def _description(nodeid: str) -> str:
    # '#' starts a KTAP directive; keep it out of the test's name.
    return nodeid.replace("#", "_").replace("\n", " ")


def _diagnostic(text: str) -> list[str]:
    return ["# " + line if line else "#" for line in text.rstrip("\n").splitlines()]


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")


# Why pytest ended a run, when it said so only on stderr (its usage errors
# before any plugin ran: an unknown option, a conftest.py failing to import).
_UNREPORTED = {ExitCode.USAGE_ERROR: "usage error, reported on stderr",
               ExitCode.INTERNAL_ERROR: "pytest internal error, reported on stderr",
               ExitCode.INTERRUPTED: "interrupted"}


class KtapReporter:
    def __init__(self):
        self.config: pytest.Config | None = None
        self.planned: int | None = None       # None: pytest stopped before the plan
        self.number = 0
        self.counts = {"pass": 0, "fail": 0, "skip": 0, "xfail": 0, "xpass": 0}
        self.outcome: dict[str, tuple[str, str]] = {}
        self.collect_errors: list[str] = []
        self.skipped_modules: list[str] = []  # pytest.skip(allow_module_level=True)
        self.deselected = 0
        self.skipped_all = False              # nothing to run because modules skipped themselves
        self.stopped = ""                     # why pytest stopped the run, if it said

    def emit(self, *lines: str) -> None:
        capman = self.config and self.config.pluginmanager.getplugin("capturemanager")
        if capman is not None:
            with capman.global_and_fixture_disabled():
                self._write(lines)
        else:
            self._write(lines)

    @staticmethod
    def _write(lines) -> None:
        print("\n".join(lines), flush=True)

    def pytest_configure(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_unconfigure(self) -> None:
        self.config = None                    # no capture to suspend from now on

    # pytest reports these ends of a run only on stderr (the usage error) or
    # not at all with its terminal reporter off: keep their reason.
    @pytest.hookimpl(wrapper=True)
    def pytest_cmdline_main(self, config: pytest.Config):
        try:
            return (yield)
        except pytest.UsageError as exc:
            self.stopped = "usage error: " + "; ".join(_first_line(a) for a in exc.args)
            raise

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo) -> None:
        self.stopped = "interrupted: " + (_first_line(getattr(excinfo.value, "msg", "")
                                                      or excinfo.value) or excinfo.typename)

    def pytest_internalerror(self, excinfo: pytest.ExceptionInfo) -> None:
        self.stopped = "pytest internal error: " + _first_line(excinfo.exconly())

    @pytest.hookimpl(trylast=True)
    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collect_errors.append(f"{report.nodeid or 'collection'}: {report.longreprtext}")
        elif report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            reason = " ".join(reason.removeprefix("Skipped: ").split())   # one line: the plan's
            self.skipped_modules.append(f"{report.nodeid}: {reason}")

    def pytest_deselected(self, items) -> None:
        self.deselected += len(items)

    def _all_skipped_modules(self, session: pytest.Session) -> bool:
        """Nothing collected, because modules skipped themselves (not a selection or an error)."""
        self.skipped_all = (not session.items and bool(self.skipped_modules)
                            and not self.deselected and not self.collect_errors)
        return self.skipped_all

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.planned = len(session.items)
        if self._all_skipped_modules(session):
            # A module that skipped itself whole: kselftest's "1..0 # SKIP".
            self.emit("KTAP version 1", f"1..0 # SKIP {'; '.join(self.skipped_modules)}")
        else:
            self.emit("KTAP version 1", f"1..{self.planned}")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        state, detail = self.outcome.get(report.nodeid, ("pass", ""))
        if report.failed:
            phase = "" if report.when == "call" else f" (in {report.when})"
            if hasattr(report, "wasxfail"):   # strict xfail that passed
                state, detail = "fail", f"XPASS(strict){phase}: {report.wasxfail}"
            else:
                state, detail = "fail", f"{report.longreprtext}{phase}"
        elif report.passed and report.when == "call" and hasattr(report, "wasxfail"):
            state, detail = "xpass", report.wasxfail    # a non-strict xfail that passed
        # (An xfail-marked test that passed, then erred in teardown: pytest's
        # verdict for the teardown, XFAIL, stands.)
        elif report.skipped and (state == "pass" or (state == "xpass" and hasattr(report, "wasxfail"))):
            if hasattr(report, "wasxfail"):
                state, detail = "xfail", report.wasxfail
            else:
                reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
                state, detail = "skip", reason.removeprefix("Skipped: ")
        self.outcome[report.nodeid] = (state, detail)
        if report.when == "teardown":
            self._result(report.nodeid)

    def _result(self, nodeid: str) -> None:
        state, detail = self.outcome.pop(nodeid)
        self.number += 1
        self.counts[state] += 1
        name = _description(nodeid)
        if state == "pass":
            self.emit(f"ok {self.number} {name}")
        elif state == "skip":
            self.emit(f"ok {self.number} {name} # SKIP {detail.splitlines()[0] if detail else ''}".rstrip())
        elif state == "xfail":
            self.emit(f"ok {self.number} {name} # XFAIL {detail}".rstrip())
        elif state == "xpass":                # as kselftest.h's ksft_test_result_xpass()
            self.emit(f"ok {self.number} {name} # XPASS {detail}".rstrip())
        else:
            self.emit(*_diagnostic(detail), f"not ok {self.number} {name}")

    def verdict(self, rc: int) -> tuple[int, str]:
        """kselftest's exit code for a run pytest ended with rc, and why it bails out ('' if not).

        The one place pytest's codes become kselftest's.  They cannot pass
        through: pytest's USAGE_ERROR is 4, kselftest's SKIP, which the
        kernel's runner shows as "ok ... # SKIP", hiding a bad path or -k.
        Only a run in which every planned test reported is an outcome;
        anything else is KSFT_FAIL with a Bail out!.  So is an empty
        selection (NO_TESTS_COLLECTED): SKIP says this kernel cannot run the
        test, but the selection depends on the arguments and the tree only
        (on a kernel it cannot use, the suite still collects every test and
        each reports its own skip).  A module that skips itself whole
        (``pytest.skip(allow_module_level=True)``) leaves nothing to collect
        too, but says why: that is a SKIP ("1..0 # SKIP reason").
        """
        c = self.counts
        if self.collect_errors:
            return KSFT_FAIL, "the tests could not be collected"
        if rc == ExitCode.NO_TESTS_COLLECTED:
            if self.skipped_all:
                return KSFT_SKIP, ""          # the modules skipped themselves, not the selection
            return KSFT_FAIL, "no tests were selected (pytest exit 5)"
        if self.stopped or rc not in (ExitCode.OK, ExitCode.TESTS_FAILED):
            why = self.stopped or _UNREPORTED.get(rc, "pytest ended the run")
            return KSFT_FAIL, f"{why} (pytest exit {rc})"
        if self.planned is None:
            return KSFT_FAIL, "pytest ran no tests"
        if self.number != self.planned:
            return KSFT_FAIL, f"stopped after {self.number} of {self.planned} tests"
        if c["fail"]:
            return KSFT_FAIL, ""
        if rc != ExitCode.OK:
            return KSFT_FAIL, "pytest reported a failure, but no test failed"
        return (KSFT_PASS if c["pass"] + c["xfail"] + c["xpass"] else KSFT_SKIP), ""

    def finish(self, rc: int) -> int:
        """Print the end of the KTAP document for a run pytest ended with rc; the exit code."""
        code, bail = self.verdict(rc)
        c = self.counts
        lines = [] if self.planned is not None else ["KTAP version 1", "1..0"]
        lines += _diagnostic("\n".join(self.collect_errors))
        lines.append(f"# Totals: pass:{c['pass']} fail:{c['fail']} xfail:{c['xfail']} "
                     f"xpass:{c['xpass']} skip:{c['skip']} error:{len(self.collect_errors)}")
        if bail:                              # KTAP: nothing may follow it
            lines.append("Bail out! " + bail.replace("\n", " "))
        self._write(lines)
        return code


def main(args: list[str]) -> int:
    reporter = KtapReporter()
    rc = pytest.main(["-p", "no:terminal", "-p", "no:cacheprovider", *args], plugins=[reporter])
    return reporter.finish(int(rc))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
