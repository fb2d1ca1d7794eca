"""`keel escalations`: list, show, resolve and reject from the command line.

Runs are started with `keel run tests/apps/recovery_app.py:...`, which executes
until the run waits for a person; a second `keel run --id` continues it after
the decision (as `keel signal` does in tests/test_cli.py).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel.cli import cli
from tests.backends import fresh_url

APP = str(Path(__file__).parent / "apps" / "recovery_app.py")
ESC = "e1:lookup_account#0"


@pytest.fixture()
def keel_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("KEEL_STORE", fresh_url(tmp_path))
    monkeypatch.setenv("KEEL_POLL_INTERVAL", "0.02")
    monkeypatch.setenv("COLUMNS", "200")  # tables wide enough not to fold ids
    monkeypatch.delenv("KEEL_TEST_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    # The CLI imports the app module once per process; each test needs a fresh one
    # bound to its own store.
    monkeypatch.delitem(sys.modules, "keel_user_recovery_app", raising=False)
    return CliRunner()


def run(r: CliRunner, *args: str) -> tuple[int, str, str]:
    res = r.invoke(cli, list(args))
    return res.exit_code, res.stdout, res.stderr


def start_lookup(r: CliRunner, run_id: str = "e1", account: str = "A-7") -> None:
    code, out, _ = run(
        r, "run", f"{APP}:lookup", "--input", json.dumps({"account_id": account}), "--id", run_id
    )
    assert code == 0 and "WAITING" in out, out
    assert f"keel escalations show {run_id}:lookup_account#0" in out


def listed(r: CliRunner, status: str = "open") -> list[dict[str, object]]:
    code, out, _ = run(r, "escalations", "list", "--status", status, "--json")
    assert code == 0
    data: list[dict[str, object]] = json.loads(out)
    return data


def test_list_show_resolve(keel_cli: CliRunner) -> None:
    start_lookup(keel_cli)
    # no subcommand: the open escalations
    code, out, _ = run(keel_cli, "escalations")
    assert code == 0 and ESC in out and "accounts" in out and "open" in out
    assert "lookup_account" in out

    (item,) = listed(keel_cli, "all")
    assert item["id"] == ESC and item["run_id"] == "e1" and item["workflow"] == "lookup"
    assert item["queue"] == "accounts" and item["kind"] == "tool" and item["status"] == "open"
    assert item["step"] == "lookup_account#0" and "packet" not in item
    assert item["reason"] == (
        "tool 'lookup_account' failed after 2 attempt(s): HTTPStatusError: HTTP 503"
    )

    code, out, _ = run(keel_cli, "escalations", "show", ESC)
    assert code == 0
    assert "why: tool 'lookup_account' failed after 2 attempt(s)" in out
    assert "workflow lookup, run e1, step lookup_account#0, tool lookup_account" in out
    assert 'input: {"args": ["A-7"]}' in out and "error: HTTPStatusError: HTTP 503" in out
    assert f"keel escalations resolve {ESC} --result JSON" in out

    code, out, _ = run(keel_cli, "escalations", "show", ESC, "--json")
    packet = json.loads(out)["packet"]
    assert code == 0
    assert packet["workflow"] == "lookup" and packet["run_id"] == "e1"
    assert packet["step"] == "lookup_account#0" and packet["tool"] == "lookup_account"
    assert packet["input"] == {"args": ["A-7"]} and packet["reason"] == item["reason"]
    assert packet["error"]["type"] == "HTTPStatusError" and packet["error"]["attempts"] == 2
    assert isinstance(packet["journal"], list)

    code, out, _ = run(
        keel_cli,
        "escalations",
        "resolve",
        ESC,
        "--result",
        '{"id": "A-7", "tier": "gold"}',
        "--by",
        "dana",
    )
    assert code == 0 and f"escalation {ESC} resolved; no live worker serves workflow" in out
    assert "'lookup', so run e1 waits — start one: keel worker MODULE" in out  # none runs
    code, out, _ = run(keel_cli, "run", f"{APP}:lookup", "--id", "e1", "--json")
    data = json.loads(out)
    assert code == 0 and data["status"] == "SUCCEEDED" and data["result"] == "A-7:gold"

    assert listed(keel_cli) == []
    (done,) = listed(keel_cli, "resolved")
    assert done["resolved_by"] == "dana" and done["resolution"] == {
        "status": "resolved",
        "result": {"id": "A-7", "tier": "gold"},
        "note": None,
        "by": "dana",
    }
    code, out, _ = run(keel_cli, "escalations", "show", ESC)
    assert code == 0 and "decided by dana" in out and "[resolved]" in out
    # the table says who decided and when, next to the status
    code, out, _ = run(keel_cli, "escalations", "list", "--status", "all")
    header = next(line for line in out.splitlines() if " id " in line)
    assert "decided by" in header and "decided" in header.split("decided by", 1)[1]
    row = next(line for line in out.splitlines() if ESC in line)
    assert "resolved" in row and "dana" in row
    stamp = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"
    assert re.search(f"{stamp}.*{stamp}", row)  # created, then decided: both as times
    code, out, _ = run(keel_cli, "show", "e1", "--json")
    (step,) = [s for s in json.loads(out)["steps"] if s["key"] == "lookup_account#0"]
    assert step["fallback"] == "human" and step["output"] == {"id": "A-7", "tier": "gold"}


def test_reject(keel_cli: CliRunner) -> None:
    start_lookup(keel_cli, "e2")
    esc = "e2:lookup_account#0"
    code, out, _ = run(
        keel_cli, "escalations", "reject", esc, "--reason", "account closed", "--by", "sam"
    )
    assert code == 0 and f"escalation {esc} rejected" in out
    code, out, _ = run(keel_cli, "run", f"{APP}:lookup", "--id", "e2", "--json")
    data = json.loads(out)
    assert code == 1 and data["status"] == "FAILED"
    err = data["error"]
    assert err["type"] == "EscalationRejected" and "account closed" in err["message"]
    assert err["fallback"] == "human" and err["data"]["by"] == "sam"
    assert err["cause"]["type"] == "HTTPStatusError"
    (item,) = listed(keel_cli, "rejected")
    assert item["id"] == esc and item["resolved_by"] == "sam"


def test_resolve_without_by_records_who(keel_cli: CliRunner) -> None:
    start_lookup(keel_cli)
    code, _, _ = run(keel_cli, "escalations", "resolve", ESC, "--result", '{"id":"A","tier":"x"}')
    assert code == 0
    (item,) = listed(keel_cli, "resolved")
    assert isinstance(item["resolved_by"], str) and item["resolved_by"]


def test_phase_escalation_resolved_with_state_edits(keel_cli: CliRunner) -> None:
    code, out, _ = run(keel_cli, "run", f"{APP}:review", "--id", "p1")
    assert code == 0 and "WAITING" in out
    esc = "p1:phase:extract#0"
    code, out, _ = run(keel_cli, "escalations", "show", esc, "--json")
    data = json.loads(out)
    assert data["kind"] == "phase" and data["packet"]["phase"] == "extract"
    assert data["packet"]["messages"] == ["figures sum to 3, not the stated total 4"]
    assert data["packet"]["state"] == {"figures": [1, 2], "total": 4}

    code, _, err = run(keel_cli, "escalations", "resolve", esc, "--result", "[1, 3]")
    assert code == 2 and "JSON object of state fields" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run(keel_cli, "escalations", "resolve", esc, "--result", '{"total": "four"}')
    assert code == 2 and "total: expected integer, got str" in err
    code, _, _ = run(keel_cli, "escalations", "resolve", esc, "--result", '{"figures": [1, 3]}')
    assert code == 0
    code, out, _ = run(keel_cli, "run", f"{APP}:review", "--id", "p1", "--json")
    data = json.loads(out)
    assert data["status"] == "SUCCEEDED" and data["result"] == {"figures": [1, 3], "total": 4}


def test_a_phase_resolution_is_checked_where_it_is_entered_and_when_the_run_resumes(
    keel_cli: CliRunner,
) -> None:
    code, out, _ = run(keel_cli, "run", f"{APP}:review", "--id", "p2")
    assert code == 0 and "WAITING" in out
    esc = "p2:phase:extract#0"
    # a misspelt field would be dropped by the state model: refused, the escalation stays open
    code, _, err = run(keel_cli, "escalations", "resolve", esc, "--result", '{"drfat": [1, 3]}')
    assert code == 2 and "drfat: unknown field (known: figures, total)" in err, err
    assert len(err.strip().splitlines()) == 1
    (item,) = listed(keel_cli)
    assert item["id"] == esc
    # fits the state; the checkpoint is the workflow's code, which this command did not load
    code, _, _ = run(
        keel_cli, "escalations", "resolve", esc, "--result", '{"figures": [1, 2, 2]}', "--by", "ana"
    )
    assert code == 0
    # the run checks it when it resumes: the phase does not pass; a new escalation says why
    code, out, _ = run(keel_cli, "run", f"{APP}:review", "--id", "p2")
    assert code == 0 and "WAITING" in out and f"keel escalations show {esc}~2" in out, out
    code, out, _ = run(keel_cli, "escalations", "show", f"{esc}~2")
    assert code == 0 and (
        f"the resolution of escalation {esc} by ana failed the checkpoint: "
        "figures sum to 5, not the stated total 4"
    ) in out.replace("\n", " "), out
    code, _, _ = run(keel_cli, "escalations", "resolve", f"{esc}~2", "--result", '{"figures": [4]}')
    assert code == 0
    code, out, _ = run(keel_cli, "run", f"{APP}:review", "--id", "p2", "--json")
    data = json.loads(out)
    assert data["status"] == "SUCCEEDED" and data["result"] == {"figures": [4], "total": 4}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["escalations", "show", "nope"], "no escalation 'nope'"),
        (["escalations", "resolve", "nope", "--result", "1"], "no escalation 'nope'"),
        (["escalations", "reject", "nope", "--reason", "x"], "no escalation 'nope'"),
        (["escalations", "resolve", ESC, "--result", "{bad"], "--result is not valid JSON"),
        # checked against the tool's return type, recorded with the escalation: the CLI
        # has not loaded the workflow's code
        (["escalations", "resolve", ESC, "--result", '{"id": "A-7"}'], "tier: required"),
        (["escalations", "resolve", ESC, "--result", '{"id": 7, "tier": "gold"}'],
         "id: expected string, got int"),
        (["escalations", "reject", ESC], "a rejection needs --reason"),
        (["escalations", "reject", ESC, "--reason", "  "], "a rejection needs a reason"),
        (["escalations", "list", "--status", "closed"], "unknown escalation status 'closed'"),
    ],
    ids=["show-unknown", "resolve-unknown", "reject-unknown", "bad-json", "missing-field",
         "wrong-type", "no-reason", "blank-reason", "bad-status"],
)  # fmt: skip
def test_bad_input_is_one_clear_line_and_decides_nothing(
    keel_cli: CliRunner, args: list[str], message: str
) -> None:
    start_lookup(keel_cli)
    code, _, err = run(keel_cli, *args)
    assert code == 2, err
    assert err.startswith("error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1, err
    (item,) = listed(keel_cli, "all")
    assert item["status"] == "open"


def test_a_second_decision_is_refused(keel_cli: CliRunner) -> None:
    start_lookup(keel_cli)
    code, _, _ = run(
        keel_cli, "escalations", "resolve", ESC, "--result", '{"id":"A","tier":"x"}', "--by", "dana"
    )
    assert code == 0
    for args in (
        ["resolve", ESC, "--result", '{"id":"A","tier":"y"}', "--by", "eve"],
        ["reject", ESC, "--reason", "changed my mind", "--by", "eve"],
    ):
        code, _, err = run(keel_cli, "escalations", *args)
        assert code == 2 and err.startswith("error: ")
        assert f"escalation {ESC} was already resolved by dana; a decision is final" in err
        assert len(err.strip().splitlines()) == 1
    (item,) = listed(keel_cli, "all")
    assert item["resolved_by"] == "dana"
    assert item["resolution"]["result"] == {"id": "A", "tier": "x"}  # type: ignore[index]
