"""Kill points: named steps where a test makes this process die by SIGKILL.

``UPTRKV_KILL_AT=STEP`` (or ``STEP:N`` for the Nth time the step is
reached) arms one point.  Crash-safety tests run a writer with it and then
check that the next open() repairs the store (tests/test_named_crash.py).
Unarmed, a call site costs one global lookup; the hot paths have none.
"""

from __future__ import annotations

import os
import signal

ARMED = os.environ.get("UPTRKV_KILL_AT") or os.environ.get("UPTRKV_KILL_LOG") or None
_step, _, _nth = (ARMED or "").partition(":")
_left = int(_nth or 1)
REACHED: list[str] = []      # steps passed, for a test that lists them (UPTRKV_KILL_LOG)
_LOG = os.environ.get("UPTRKV_KILL_LOG")


def arm(step: str | None = None, log: str | None = None) -> None:
    """Arm STEP (or STEP:N) in this process, and/or log every step to LOG; with neither,
    disarm.  For a writer forked from a test, which inherits the parent's unarmed state."""
    global ARMED, _step, _left, _LOG
    ARMED = step or log or None
    _step, _, nth = (step or "").partition(":")
    _left = int(nth or 1)
    _LOG = log


def reached(step: str) -> None:
    """Die here if this step is the armed one (call only under ``if ARMED``)."""
    global _left
    if _LOG:
        with open(_LOG, "a") as f:
            f.write(step + "\n")
    if step == _step:
        _left -= 1
        if _left == 0:
            os.kill(os.getpid(), signal.SIGKILL)
