"""The scan's records keep what they had as frozen dataclasses (equality, hash, a repr
without the secret, no assignment, ``replace``), and the ``scan --json`` path loads
neither ``dataclasses`` nor ``typing`` (what made it slow to start)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_keys.scan.configs import Candidate
from mcp_keys.scan.scanner import Finding

SECRET = "sk_live_" + "Q7v" * 8


def test_candidate_hides_its_value_and_compares_without_its_path() -> None:
    one = Candidate(Path("a.json"), 3, "env.K", "K", SECRET, "srv", "env", ("env", "K"))
    assert SECRET not in repr(one), "the repr shows the value"
    assert "keys=" not in repr(one)
    same = Candidate(Path("a.json"), 3, "env.K", "K", SECRET, "srv", "env", None)
    assert one == same and hash(one) == hash(same)
    assert one != one.replace(value=SECRET + "x")
    moved = one.replace(line=9, keys=None)
    assert (moved.line, moved.keys, moved.value == SECRET) == (9, None, True)
    with pytest.raises(AttributeError):
        setattr(one, "value", "other")  # noqa: B010 (the assignment a frozen record refuses)
    with pytest.raises(TypeError):
        one.replace(colour="red")


def test_finding_leaves_its_candidate_out_of_repr_and_equality() -> None:
    candidate = Candidate(Path("a.json"), 3, "env.K", "K", SECRET)
    finding = Finding(Path("a.json"), 3, "env.K", "stripe-secret-key", "sk_l… (32 chars)",
                      None, "env", candidate=candidate)
    assert SECRET not in repr(finding) and "candidate" not in repr(finding)
    assert finding == finding.replace(candidate=None)
    assert finding != finding.replace(commit="abc")
    assert finding.level == "error" and finding.replace(level="note").level == "note"


def test_the_scan_json_path_imports_no_dataclasses_or_typing(tmp_path: Path) -> None:
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"s": {"command": "npx",
                                                       "env": {"API_KEY": SECRET}}}}))
    probe = ("import sys\n"
             "from mcp_keys import entry\n"
             "sys.argv = ['mcp-keys', 'scan', sys.argv[1], '--json']\n"
             "try:\n"
             "    entry.main()\n"
             "except SystemExit:\n"
             "    pass\n"
             "print(sorted(m for m in ('dataclasses', 'typing', 'click', 'mcp_keys.tokens')"
             " if m in sys.modules), file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", probe, str(config)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert SECRET not in done.stdout + done.stderr, "the scan printed the secret"
    assert '"stripe-secret-key"' in done.stdout, "the scan missed the key"
    assert done.stderr.strip().splitlines()[-1] == "[]", "the scan path imported more"
