"""`make demo` runs end to end: every example, the crash recovery, the review console, and a
feature built on the durable-operation primitive."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(900)  # minutes on an idle machine; bounds, never timings
def test_the_demo_runs_and_shows_each_part(tmp_path: Path) -> None:
    env = {**os.environ, "KEEL_DEMO_DIR": str(tmp_path / "demo")}
    proc = subprocess.run([sys.executable, "scripts/demo.py"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=860)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    out = proc.stdout
    for part in ("0. A store encrypted at rest", "1. Scatter-gather", "2. Sequential triage",
                 "3. An irreversible refund", "4. Crash recovery", "5. SIGTERM drains",
                 "6. The review console", "7. Privacy",
                 "8. A feature of your own on the durable-operation primitive",
                 "9. Still waiting", "11. Tiered memory"):
        assert part in out, part
    # T-1045's resolution passes its phase: the run goes on to wait for the approval
    assert "keel signal T-1045 approval" in out and "T-1045:phase:respond#0~2" not in out
    assert "0 finished ones re-ran" in out
    # drift: the classifier's shifted class mix, caught and reported by `keel drift report`
    assert "12. Drift" in out and re.search(r"classify_ticket +distribution:category +ALERT", out)
    # the release step and the readiness probe (docs/deploy.md) on the demo's store
    assert "created schema v" in out and "schema   ok" in out and "clock    ok" in out
    assert "dana signed in (dana (reviewer))" in out
    assert "next to the field: 'enter a number'; nothing decided" in out
    assert "edited by dana" in out and "run refund-2 SUCCEEDED" in out
    # SIGTERM: the worker drained and exited 0, its run went straight back to the queue
    assert "worker exited 0" in out and "drained: every step in flight finished" in out
    # (WAITING when the drain caught a model call's Retry-After backoff: a durable timer)
    assert ("run summary-3 is PENDING" in out or "run summary-3 is WAITING" in out), out
    # a secret by reference; the store encrypted: nothing planted is found in the files
    assert "crm_key = {'$secret': 'env:KEEL_EXAMPLE_CRM_KEY'}" in out
    assert "api_token = [REDACTED]" in out
    assert out.count("absent from keel.db and its WAL") == 4 and "FOUND in" not in out
    # the oracle answered through a signal; resumed and started again, it was asked once
    assert "run ord-7781 is WAITING on ['oracle:oracle#0']" in out
    assert "asked once (1 question in the oracle's inbox)" in out
    assert "booked covered-van/ord-7781" in out
    assert "eval triage: PASS  40 cases x 1" in out and "exit 0" in out
    # tiered memory: session fields carried the order, long-term facts only above the
    # threshold (none for the unrelated question), every model call within its budget,
    # the carrier record cut by keep=, and the extraction's statuses; the next
    # conversation (and `keel memory search`) finds what it learnt
    assert '"order_id": "A-7781"' in out and "long-term hits: none above 0.25" in out
    used = [(int(n), int(b)) for n, b in re.findall(r"context (\d+)/(\d+) tokens", out)]
    assert len(used) == 7 and all(n <= b == 400 for n, b in used), used
    assert "(conversation dropped)" in out or "(conversation truncated)" in out
    assert "kept 5 of" in out
    assert "duplicate Maya Patel prefers to be contacted by email, never by phone" in out
    learnt = "Maya Patel wants parcels delivered to the office at 5 Dock Street, Leeds"
    assert f"added     {learnt}" in out
    assert "It goes to the office at 5 Dock Street, Leeds, as you asked last time." in out
    assert re.search(r"0\.\d\d  mem_\w+  " + learnt, out), out[-2000:]
