"""The kernel-style verifier selftests of uptr memory, judged as test_progs would.

``vm/patches/0002`` adds ``progs/verifier_uptr_dynptr.c`` to the kernel's
selftests, each program annotated ``__success`` or ``__failure`` with
``__msg(...)``.  The tree's own uptr programs are judged too:
``progs/uptr_failure.c``, because 0001 changes how the verifier log names
uptr memory (``uptr_mem``) and updates that file's expected message, which
only a run shows to be right; ``progs/task_ls_uptr.c`` and
``progs/test_task_local_data.c``, which carry no annotations (their
prog_tests load them) and so must load.  ``vm/build-kernel.sh`` compiles
them against the built kernel's BTF, and ``vm/vmrun.sh`` hands the objects
to the guest.  Here each
program is loaded alone through this project's loader and its annotations
are checked the way the kernel's ``test_loader.c`` checks them: the tags
read from the object's BTF (``btf_decl_tag("comment:<n>:...")``, in source
order; a program with none is a ``__success``), loaded with the verifier's
test flags, and every ``__msg`` must appear in the log after the previous
one.  A refusal must also be the verifier's (EACCES), where test_loader
takes any error: stricter than upstream.  (The whole ``test_progs`` build
needs pahole >= 1.26 and is not run; see the README.)

Collected only in the VM (``test_vm_*``), where the patched kernel runs.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest

from conftest import EXPECT_DYNPTR
from uptrkv.loader import BpfObject, LoadError

# Collected only in the VM; run by explicit path outside it (as the
# kselftest wrappers do), it skips there.
pytestmark = pytest.mark.skipif(not EXPECT_DYNPTR,
                                reason="needs the verifier patch (UPTRKV_EXPECT_DYNPTR=1, the VM)")

SELFTESTS = Path(os.environ.get("UPTRKV_RESULTS", "/nonexistent")) / "kernel-selftests"
# Each object and the programs it must hold: every case the issue names
# plus the accepted ones (see 0002), and all of the tree's uptr programs.
EXPECTED = {
    "verifier_uptr_dynptr": {
        "uptr_dynptr_read_write", "uptr_dynptr_spill_fill", "uptr_dynptr_var_off",
        "uptr_dynptr_data_slice", "ringbuf_dynptr_slice_chain", "ringbuf_record",
        "uptr_global_subprog_arg", "uptr_dynptr_rdonly_slice", "rdonly_mem",
        "uptr_dynptr_no_null_check"},
    "uptr_failure": {
        "uptr_write", "uptr_write_nested", "uptr_no_null_check", "uptr_kptr_xchg",
        "uptr_obj_new"},
    "task_ls_uptr": {"on_enter"},
    "test_task_local_data": {"task_main"},
}
TAG = re.compile(r"comment:(\d+):(.*)", re.S)
# test_loader.c loads every case with testing_prog_flags(): the verifier's
# extra checks (random upper halves after 32-bit ops, register invariants).
BPF_F_TEST_RND_HI32 = 1 << 2
BPF_F_TEST_REG_INVARIANTS = 1 << 7


def annotations(obj: BpfObject, prog: str) -> list[str]:
    """The program's test tags in source order (test_loader sorts by the counter)."""
    tags = [m for m in (TAG.fullmatch(t) for t in obj.btf.decl_tags(prog)) if m]
    return [text for _, text in sorted((int(m[1]), m[2]) for m in tags)]


def expectation(tags: list[str]) -> tuple[bool, list[str]]:
    """(expect success, messages in order); anything this check cannot judge fails."""
    verdicts = [t for t in tags if t in ("test_expect_success", "test_expect_failure")]
    msgs = [t.removeprefix("test_expect_msg=") for t in tags if t.startswith("test_expect_msg=")]
    unknown = [t for t in tags if t not in verdicts and not t.startswith("test_expect_msg=")]
    # No verdict tag means __success to test_loader; a __success __msg needs
    # the log of an accepted load (__log_level), which this check does not ask for.
    success = "test_expect_failure" not in verdicts
    if len(verdicts) > 1 or unknown or any("{{" in m for m in msgs) or (success and msgs):
        pytest.fail(f"annotations this check does not implement: {tags}")
    return success, msgs


def in_order(log: str, msgs: list[str]) -> str | None:
    """The first message not found after the previous one, or None."""
    pos = 0
    for msg in msgs:
        at = log.find(msg, pos)
        if at < 0:
            return msg
        pos = at + len(msg)
    return None


def object_path(stem: str) -> Path:
    return SELFTESTS / f"{stem}.bpf.o"


def programs() -> list[tuple[str, str]]:
    found = []
    for stem in EXPECTED:
        if object_path(stem).exists():
            with BpfObject(object_path(stem)) as obj:
                found += [(stem, p.name) for p in obj.programs()]
    return sorted(found)


PROGRAMS = programs()


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_the_object_was_built_with_the_kernel(stem):
    assert object_path(stem).exists(), (
        f"{object_path(stem)} is missing: vm/build-kernel.sh compiles the uptr selftests "
        "beside the image and vm/vmrun.sh copies them to the guest; a VM_KERNEL image has none")
    assert EXPECTED[stem] <= {name for s, name in PROGRAMS if s == stem}


@pytest.mark.parametrize("stem,name", PROGRAMS, ids=[f"{s}:{n}" for s, n in PROGRAMS])
def test_annotated_verdict(kernel, stem, name):
    with BpfObject(object_path(stem)) as obj:
        success, msgs = expectation(annotations(obj, name))
        for prog in obj.programs():
            prog.set_autoload(prog.name == name)
        prog = obj.program(name)
        prog.set_flags(prog.flags | BPF_F_TEST_RND_HI32 | BPF_F_TEST_REG_INVARIANTS)
        try:
            obj.load()
        except LoadError as exc:
            assert not success, f"{name} is annotated __success but was refused:\n{exc.verifier_log}"
            assert exc.errno == errno.EACCES, exc
            missing = in_order(exc.verifier_log, msgs)
            assert missing is None, f"{name}: {missing!r} not in the log (in order):\n{exc.verifier_log}"
        else:
            assert success, f"{name} is annotated __failure {msgs} but was accepted"
