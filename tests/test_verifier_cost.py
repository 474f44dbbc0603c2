"""examples/verifier_cost.py loads each program alone and prints the verifier's
own counts: a plain object, one with known keys (loaded against a store that
holds them) and one the verifier rejects."""

import re
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_each_program_alone_with_the_verifiers_counts(kernel, capsys):
    sys.path.insert(0, str(EXAMPLES))
    try:
        import verifier_cost
    finally:
        sys.path.remove(str(EXAMPLES))
    assert verifier_cost.main(["test_kv_ops", "known_v1", "rollout_v2_rejected"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    for name in ("kv_ops", "known_v1"):
        insns, total, peak = (int(x.replace(",", "")) for x in rows[name].split()[1:4])
        assert 0 < insns < 1_000_000 and total > 0 and peak > 0, rows[name]
        assert "rejected" not in rows[name]
    # rejected, with the counts of what the verifier checked before it stopped
    assert re.search(r"^rollout_v2 +[0-9,]+ +[0-9,]+ +[0-9,]+ .* rejected: Permission denied$",
                     rows["rollout_v2"]), rows["rollout_v2"]
