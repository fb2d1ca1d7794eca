"""The CI gate, end to end: `keel eval` on the triage example's 40-case suite against
its committed baseline exits 0; with the scripted model degraded on purpose it exits 100
naming the scorer and the cases; a harness error exits 1. Each in its own process, as
CI runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.limits import WAIT

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
BASELINE = EXAMPLES / "data" / "triage_baseline.json"


def keel_eval(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KEEL_TRACING": "false"}
    return subprocess.run(
        [sys.executable, "-m", "keel.cli", "eval", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=4 * WAIT,
    )


def test_the_triage_suite_passes_against_its_committed_baseline(tmp_path: Path) -> None:
    done = keel_eval(
        tmp_path,
        f"{EXAMPLES}/triage_eval.py:suite",
        "--baseline",
        str(BASELINE),
        "--json",
        "--junit",
        "junit.xml",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["outcome"] == "pass" and report["cases"] == 40
    assert {p["scorer"]: p["delta"] for p in report["comparison"]} == {
        "category": 0.0,
        "priority": 0.0,
        "route": 0.0,
        "trajectory": 0.0,
        "budget": 0.0,
    }
    assert 'tests="40" failures="' in (tmp_path / "junit.xml").read_text()


def test_a_degraded_model_exits_100_naming_the_scorer_and_the_cases(tmp_path: Path) -> None:
    # The scripted model forgets every billing keyword: billing tickets come out "general".
    (tmp_path / "degraded.py").write_text(
        f"import sys\nsys.path.insert(0, {str(EXAMPLES)!r})\n"
        "import _offline_model\n"
        "_offline_model._CATEGORY_KEYWORDS['billing'] = ()\n"
        "from triage_eval import suite\n"
    )
    done = keel_eval(
        tmp_path, "degraded.py:suite", "--baseline", str(BASELINE), "--report", "report.md"
    )
    assert done.returncode == 100, (done.stdout, done.stderr)
    regression = next(line for line in done.stdout.splitlines() if "regressed" in line)
    assert regression.startswith("FAIL category: regressed -0.225 against the baseline")
    for case in ("E-012", "E-013", "E-016", "E-035", "E-040"):  # billing tickets
        assert case in regression
    assert "FAIL category[billing]: mean 0.000 below threshold 0.800" in done.stdout
    assert "priority" not in regression  # only the scorer that moved is named
    assert "## Eval `triage`: FAIL" in (tmp_path / "report.md").read_text()


def test_a_harness_error_exits_1_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text(
        f"import sys\nsys.path.insert(0, {str(EXAMPLES)!r})\n"
        "from keel import evals\nfrom support_triage import triage\n"
        "suite = evals.Suite('triage', triage, 'missing.jsonl', scorers=[evals.fields('x')])\n"
    )
    done = keel_eval(tmp_path, "broken.py:suite")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: suite 'triage': no dataset file 'missing.jsonl': give a JSONL file or a list"
    )
    done = keel_eval(tmp_path, "broken.py:nothing")
    assert (done.returncode, done.stderr.strip()) == (
        1,
        "error: broken.py has no keel.evals.Suite named 'nothing' (suites there: suite)",
    )
    done = keel_eval(tmp_path, f"{EXAMPLES}/triage_eval.py:suite", "--baseline", "nope.json")
    assert done.returncode == 1 and "no baseline file 'nope.json'" in done.stderr
