"""The benchmark runs end to end (tiny sizes) and reports what the README is built from.
It checks the report's shape, never a speed: speed is the bench's business."""

import json
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_bench_quick_run_reports_every_row(kernel, tmp_path, capsys):
    sys.path.insert(0, str(EXAMPLES))
    try:
        import bench
    finally:
        sys.path.remove(str(EXAMPLES))
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--only", "run,get", "--json", str(out),
                       "--markdown", str(tmp_path / "bench.md"), "--plot", str(tmp_path / "bench.png")]) == 0
    report = json.loads(out.read_text())
    sections = report["sections"]
    assert {"run", "get_1", "get_2", "get_4", "get_8"} <= set(sections)
    known = sections["run"]["rows"]["store, known keys (KV_KNOWN)"]
    assert known["ref"] == "struct" and len(known["rounds"]) == 2 and known["ratio"] > 0
    assert "kv_store_get (page picked with masks)" in sections["get_2"]["rows"]
    text = (tmp_path / "bench.md").read_text()
    assert report["machine"]["cpu"] in text and "known keys per run" in text
    assert "| one run: 1 lookup + 4 reads + 4 read-modify-writes (8 B) |" in capsys.readouterr().out
