"""The `keel` command: every subcommand, its JSON output and its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel.cli import cli
from tests.backends import fresh_url
from tests.limits import WAIT

APP = str(Path(__file__).parent / "apps" / "cli_app.py")


@pytest.fixture()
def keel_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("KEEL_STORE", fresh_url(tmp_path))
    monkeypatch.setenv("KEEL_POLL_INTERVAL", "0.02")
    monkeypatch.chdir(tmp_path)
    # The CLI imports the app module once per process; each test needs a fresh one
    # bound to its own store.
    monkeypatch.delitem(sys.modules, "keel_user_cli_app", raising=False)
    return CliRunner()


def run(r: CliRunner, *args: str) -> tuple[int, str, str]:
    res = r.invoke(cli, list(args))
    return res.exit_code, res.stdout, res.stderr


def test_run_prints_result_and_show_json(keel_cli: CliRunner) -> None:
    code, out, _ = run(keel_cli, "run", f"{APP}:fan", "--input", '{"n": 4}', "--id", "f1")
    assert code == 0 and "SUCCEEDED" in out and "12" in out
    code, out, _ = run(keel_cli, "show", "f1", "--json")
    data = json.loads(out)
    assert code == 0 and data["status"] == "SUCCEEDED" and data["result"] == 12
    assert {"id", "workflow", "status", "result", "error"} <= data.keys()
    keys = sorted(s["key"] for s in data["steps"])
    assert keys == [
        "map:double#0",
        "map:double#0/0",
        "map:double#0/1",
        "map:double#0/2",
        "map:double#0/3",
    ]
    code, out, _ = run(keel_cli, "show", "f1")
    assert code == 0 and "map:double#0" in out and "f1" in out


def test_signal_resumes_a_waiting_run(keel_cli: CliRunner) -> None:
    code, out, _ = run(keel_cli, "run", f"{APP}:waits", "--id", "w1")
    assert code == 0 and "WAITING" in out and "keel signal w1 go" in out
    code, out, _ = run(keel_cli, "runs", "--status", "waiting", "--json")
    assert [r["id"] for r in json.loads(out)] == ["w1"]
    code, out, _ = run(keel_cli, "signal", "w1", "go", "--payload", '"now"')
    assert code == 0
    code, out, _ = run(keel_cli, "run", f"{APP}:waits", "--id", "w1", "--json")
    data = json.loads(out)
    assert data["status"] == "SUCCEEDED" and data["result"] == "got now"


def test_detach_then_worker_executes(keel_cli: CliRunner, tmp_path: Path) -> None:
    code, out, _ = run(keel_cli, "run", f"{APP}:fan", "--id", "d1", "--detach", "--json")
    assert code == 0 and json.loads(out)["status"] == "PENDING"
    env = {
        **os.environ,
        "KEEL_STORE": fresh_url(tmp_path),
        "KEEL_POLL_INTERVAL": "0.02",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "keel.cli", "worker", APP, "-c", "4"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(500):
            _, out, _ = run(keel_cli, "show", "d1", "--json")
            if json.loads(out)["status"] == "SUCCEEDED":
                break
            import time

            time.sleep(0.02)
        assert json.loads(out)["result"] == 20
    finally:
        worker.terminate()
        _, err = worker.communicate(timeout=WAIT)
    assert worker.returncode == 0
    assert "keel worker: 3 workflow(s) [broken, fan, waits]" in err


def test_failed_run_exits_nonzero_with_structured_error(keel_cli: CliRunner) -> None:
    code, out, _ = run(keel_cli, "run", f"{APP}:broken", "--json", "--id", "b1")
    data = json.loads(out)
    assert code == 1 and data["status"] == "FAILED"
    assert data["error"]["type"] == "RuntimeError" and data["error"]["message"] == "boom"


def test_cancel(keel_cli: CliRunner) -> None:
    run(keel_cli, "run", f"{APP}:waits", "--id", "c1")
    code, out, _ = run(keel_cli, "cancel", "c1")
    assert code == 0 and "cancelled" in out
    code, _, err = run(keel_cli, "cancel", "c1")
    assert code == 1 and "already ended CANCELLED" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", f"{APP}:fan", "--input", "{bad"], "--input is not valid JSON"),
        (["run", f"{APP}:fan", "--input", "[1]"], "--input must be a JSON object"),
        (["run", f"{APP}:nope"], "has no workflow 'nope' (registered: broken, fan, waits)"),
        (["run", f"{APP}:fan", "--input", '{"n": "x"}'], "input for workflow 'fan' is invalid: n:"),
        (["run", f"{APP}:fan", "--input", '{"m": 1}'], "m: Extra inputs are not permitted"),
        (["run", "no/such/file.py:wf"], "no such file: no/such/file.py"),
        (["run", "fan"], "expected MODULE:WORKFLOW"),
        (["run", "keel_no_such_module:wf"], "cannot import module 'keel_no_such_module'"),
        (["show", "missing"], "no run 'missing'"),
        (["signal", "missing", "go"], "no run 'missing'"),
        (["signal", "x", "go", "--payload", "{"], "--payload is not valid JSON"),
        (["runs", "--status", "DONE"], "unknown status 'DONE'"),
        (["cancel", "missing"], "no run 'missing'"),
    ],
)
def test_bad_input_is_one_clear_line(keel_cli: CliRunner, args: list[str], message: str) -> None:
    code, _, err = run(keel_cli, *args)
    assert code == 2
    assert err.startswith("error: ") and message in err
    assert len(err.strip().splitlines()) == 1
    # nothing half-written: no run was recorded by a rejected start
    _, runs_out, _ = run(keel_cli, "runs", "--json")
    assert json.loads(runs_out) == []


def test_signal_to_finished_run_is_refused(keel_cli: CliRunner) -> None:
    run(keel_cli, "run", f"{APP}:fan", "--id", "done1")
    code, _, err = run(keel_cli, "signal", "done1", "go")
    assert code == 2 and "already SUCCEEDED" in err


def test_bad_setting_is_reported(keel_cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_LEASE_SECONDS", "soon")
    code, _, err = run(keel_cli, "runs")
    assert code == 2 and "KEEL_LEASE_SECONDS" in err


def test_bad_store_url(keel_cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_STORE", "mongodb://x")
    code, _, err = run(keel_cli, "runs")
    assert code == 2 and "unsupported store URL" in err


def test_reusing_an_id_with_other_input_is_refused(keel_cli: CliRunner) -> None:
    code, out, _ = run(keel_cli, "run", f"{APP}:fan", "--input", '{"n": 3}', "--id", "same")
    assert code == 0 and "SUCCEEDED" in out
    code, out, err = run(keel_cli, "run", f"{APP}:fan", "--input", '{"n": 5}', "--id", "same")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "'same'" in err
    assert '{"n": 3}' in err and '{"n": 5}' in err and "pick a new id" in err
    code, out, _ = run(keel_cli, "run", f"{APP}:fan", "--input", '{"n": 3}', "--id", "same")
    assert code == 0 and "SUCCEEDED" in out  # the same input stays idempotent
    code, out, _ = run(keel_cli, "runs", "--json")
    assert [r["id"] for r in json.loads(out)] == ["same"]
