"""The uptrkv command: exit codes and messages."""

from pathlib import Path

from uptrkv.cli import main
from uptrkv.objects import object_path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "rollout"

def test_manifest_check_ok_and_mismatch(capsys):
    assert main(["manifest", "check", str(EXAMPLES / "v2.toml"), "--object", str(object_path("rollout_v2"))]) == 0
    assert "3 keys, 24 bytes" in capsys.readouterr().out
    assert main(["manifest", "check", str(EXAMPLES / "v1.toml"), "--object", str(object_path("rollout_v2"))]) == 1
    assert "key 'v1_only' (id 1) is not declared" in capsys.readouterr().err

def test_manifest_header_and_plan(capsys):
    assert main(["manifest", "header", str(EXAMPLES / "v3.toml")]) == 0
    assert "KV_KEY(last, 3, __u8[16]);" in capsys.readouterr().out
    assert main(["plan", str(EXAMPLES / "v1.toml"), str(EXAMPLES / "v2.toml")]) == 0
    out = capsys.readouterr().out
    assert "removed  1   v1_only" in out and "added    4   inherited" in out

def test_layout_and_check(kernel, capsys):
    assert main(["layout", str(object_path("test_kv_ops"))]) == 0
    assert "max_keys        1024" in capsys.readouterr().out
    assert main(["check"]) == 0
    assert "uptr KV store supported" in capsys.readouterr().out


def test_check_says_when_a_store_cannot_be_hosted(kernel):
    """./run falls back to the VM on exit 3; a process without BPF privileges gets it."""
    import subprocess
    import sys
    # root without capabilities (an empty bounding set): the checkout may sit in
    # a directory other users cannot read, as a fresh clone under mktemp -d does.
    # The limit only catches a hang: on the debug kernel in TCG the interpreter's
    # start alone took more than 60 s.
    res = subprocess.run(["setpriv", "--bounding-set=-all", "--inh-caps=-all",
                          sys.executable, "-m", "uptrkv.cli", "check"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600,
                         cwd="/")
    assert res.returncode == 3, res.stderr
    assert "unsupported" in res.stderr and "CAP_BPF" in res.stderr
