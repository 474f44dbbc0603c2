"""pytest plugin: report the run as KTAP v1 and exit with kselftest's codes.

Load it with ``-p uptrkv_ktap -p no:terminal`` (this directory on
PYTHONPATH).  Each collected test becomes one KTAP result line, in the
order it ran; failure details and skip reasons become ``#`` diagnostic
lines.  The exit code is kselftest's: 0 when every test passed (some may
have been skipped), 1 when any failed or the run could not start, 4 when
every test was skipped (the kernel cannot host a store, say).
"""

from __future__ import annotations

import pytest

KSFT_PASS, KSFT_FAIL, KSFT_SKIP = 0, 1, 4


def _description(nodeid: str) -> str:
    # '#' starts a KTAP directive; keep it out of the test's name.
    return nodeid.replace("#", "_").replace("\n", " ")


def _diagnostic(text: str) -> list[str]:
    return ["# " + line if line else "#" for line in text.rstrip("\n").splitlines()]


class KtapReporter:
    def __init__(self, config: pytest.Config):
        self.config = config
        self.number = 0
        self.counts = {"pass": 0, "fail": 0, "skip": 0, "xfail": 0, "xpass": 0}
        self.outcome: dict[str, tuple[str, str]] = {}
        self.collect_errors: list[str] = []

    def emit(self, *lines: str) -> None:
        capman = self.config.pluginmanager.getplugin("capturemanager")
        if capman is not None:
            with capman.global_and_fixture_disabled():
                self._write(lines)
        else:
            self._write(lines)

    @staticmethod
    def _write(lines) -> None:
        print("\n".join(lines), flush=True)

    @pytest.hookimpl(trylast=True)
    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collect_errors.append(f"{report.nodeid or 'collection'}: {report.longreprtext}")

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.emit("KTAP version 1", f"1..{len(session.items)}")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        state, detail = self.outcome.get(report.nodeid, ("pass", ""))
        if report.failed:
            phase = "" if report.when == "call" else f" (in {report.when})"
            if hasattr(report, "wasxfail"):   # strict xfail that passed
                state, detail = "fail", f"XPASS(strict){phase}: {report.wasxfail}"
            else:
                state, detail = "fail", f"{report.longreprtext}{phase}"
        elif report.skipped and state == "pass":
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
        else:
            self.emit(*_diagnostic(detail), f"not ok {self.number} {name}")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        c = self.counts
        if self.collect_errors:
            self.emit(*_diagnostic("\n".join(self.collect_errors)),
                      "Bail out! the tests could not be collected")
            code = KSFT_FAIL
        elif c["fail"] or int(exitstatus) not in (0, 5):
            code = KSFT_FAIL
        elif c["pass"] + c["xfail"] == 0:
            code = KSFT_SKIP
        else:
            code = KSFT_PASS
        self.emit(f"# Totals: pass:{c['pass']} fail:{c['fail']} xfail:{c['xfail']} "
                  f"xpass:{c['xpass']} skip:{c['skip']} error:{len(self.collect_errors)}")
        session.exitstatus = code


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(KtapReporter(config), "uptrkv-ktap-reporter")
