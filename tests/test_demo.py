"""`make demo` runs end to end: every example, the crash recovery and the review console."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_demo_runs_and_shows_each_part(tmp_path: Path) -> None:
    env = {**os.environ, "KEEL_DEMO_DIR": str(tmp_path / "demo")}
    proc = subprocess.run([sys.executable, "scripts/demo.py"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    out = proc.stdout
    for part in ("1. Scatter-gather", "2. Sequential triage", "3. An irreversible refund",
                 "4. Crash recovery", "5. The review console", "6. Still waiting"):
        assert part in out, part
    # T-1045's resolution passes its phase: the run goes on to wait for the approval
    assert "keel signal T-1045 approval" in out and "T-1045:phase:respond#0~2" not in out
    assert "0 finished ones re-ran" in out
    assert "dana signed in (dana (reviewer))" in out
    assert "next to the field: 'enter a number'; nothing decided" in out
    assert "edited by dana" in out and "run refund-2 SUCCEEDED" in out
