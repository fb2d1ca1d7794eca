"""`keel approvals ...` and `keel review ...`: list, show, decide, export; one-line errors.

Runs are started and resumed through a Python App on the same store
(tests/apps/hitl_app.py); people decide through the CLI, which needs no app code.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import keel
from keel.cli import cli
from tests.apps.hitl_app import build
from tests.backends import fresh_url
from tests.limits import WAIT

SETTLE = WAIT  # a bound, never a timing (tests/limits.py)


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.url = fresh_url(tmp_path)
        self.runner = CliRunner()

    def cli(self, *args: str) -> tuple[int, str, str]:
        res = self.runner.invoke(cli, list(args))
        return res.exit_code, res.stdout, res.stderr

    def app(self, fn: Callable[[keel.App], Awaitable[Any]]) -> Any:
        async def go() -> Any:
            app = build(self.url)
            try:
                return await fn(app)
            finally:
                await app.close()

        return asyncio.run(go())

    def park(self, workflow: str, inputs: dict[str, Any], run_id: str) -> keel.RunInfo:
        async def go(app: keel.App) -> keel.RunInfo:
            info = await (await app.start(workflow, inputs, id=run_id)).settle(SETTLE)
            assert info.status is keel.RunStatus.WAITING
            return info

        info: keel.RunInfo = self.app(go)
        return info

    def finish(self, workflow: str, inputs: dict[str, Any], run_id: str) -> keel.RunInfo:
        """Resume a decided run in this process until it ends."""

        async def go(app: keel.App) -> keel.RunInfo:
            handle = await app.start(workflow, inputs, id=run_id)
            return await app._wait(handle.id, lambda s: s.terminal, SETTLE)

        info: keel.RunInfo = self.app(go)
        return info


@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    monkeypatch.setenv("KEEL_STORE", fresh_url(tmp_path))
    monkeypatch.setenv("KEEL_POLL_INTERVAL", "0.02")
    monkeypatch.setenv("KEEL_TEST_DIR", str(tmp_path / "data"))
    (tmp_path / "data" / "effects").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "keel_user_hitl_app", raising=False)
    return Env(tmp_path)


def one_line_error(code: int, err: str, message: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1, err


PAY_A = {"account": "acme", "amount": 10}
PAY_B = {"account": "bolt", "amount": 20}


def test_list_and_show(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # a table wide enough to keep ids on one line
    env.park("payout", PAY_A, "a1")
    env.park("deadline", {"policy": "reject", "timeout": 3600}, "d1")

    code, out, _ = env.cli("approvals")  # no subcommand: the pending requests
    assert code == 0 and "a1:approval:pay#0" in out and "d1:approval:action#0" in out

    code, out, _ = env.cli("approvals", "list", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["id"] for r in rows] == ["a1:approval:pay#0", "d1:approval:action#0"]
    for row in rows:
        assert {"id", "run_id", "queue", "status", "tool", "args"} <= row.keys()
    pay = rows[0]
    assert (pay["run_id"], pay["queue"], pay["status"]) == ("a1", "payments", "pending")
    assert (pay["tool"], pay["args"]) == ("pay", PAY_A)
    assert rows[1]["queue"] == "refunds" and rows[1]["deadline"] is not None

    code, out, _ = env.cli("approvals", "list", "--queue", "refunds", "--json")
    assert [r["run_id"] for r in json.loads(out)] == ["d1"]
    code, out, _ = env.cli("approvals", "list", "--kind", "novelty", "--json")
    assert json.loads(out) == []

    code, out, _ = env.cli("approvals", "show", "a1:approval:pay#0", "--json")
    shown = json.loads(out)
    assert code == 0 and shown["tool"] == "pay" and shown["args"] == PAY_A
    assert shown["request"]["reason"] == "money leaves the company"
    assert shown["request"]["incoming"] == PAY_A
    assert [e["action"] for e in shown["audit"]] == ["requested"]
    code, out, _ = env.cli("approvals", "show", "a1:approval:pay#0")
    assert code == 0 and "proposed action: pay" in out and "money leaves the company" in out

    one_line_error(*env.cli("approvals", "show", "nope")[::2], "no review request 'nope'")
    one_line_error(*env.cli("approvals", "list", "--kind", "x")[::2], "unknown kind 'x'")


def test_approve_with_note_then_the_run_finishes(env: Env) -> None:
    env.park("payout", PAY_A, "a1")
    code, out, _ = env.cli(
        "approvals", "approve", "a1:approval:pay#0", "--note", "invoice checked", "--by", "alice"
    )
    assert code == 0 and "approved" in out and "a1" in out
    info = env.finish("payout", PAY_A, "a1")
    assert info.status is keel.RunStatus.SUCCEEDED and info.result == "paid 10 to acme"

    code, out, _ = env.cli("approvals", "list", "--status", "all", "--json")
    [row] = json.loads(out)
    assert row["status"] == "approved" and row["decided_by"] == "alice"
    assert row["decision"]["note"] == "invoice checked"
    # decided once
    one_line_error(
        *env.cli("approvals", "approve", "a1:approval:pay#0")[::2], "a decision is final"
    )
    one_line_error(
        *env.cli("approvals", "reject", "a1:approval:pay#0", "--reason", "x")[::2],
        "already approved by alice",
    )


def test_reject_needs_a_reason_and_fails_the_step(env: Env) -> None:
    env.park("payout", PAY_B, "b1")
    one_line_error(*env.cli("approvals", "reject", "b1:approval:pay#0")[::2], "needs --reason")
    code, out, _ = env.cli(
        "approvals", "reject", "b1:approval:pay#0", "--reason", "unknown payee", "--by", "alice"
    )
    assert code == 0 and "rejected" in out
    info = env.finish("payout", PAY_B, "b1")
    assert info.status is keel.RunStatus.FAILED and info.error is not None
    assert info.error.type == "ApprovalRejected" and "unknown payee" in info.error.message


def test_edit_validates_then_approves(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # one audit entry per line
    env.park("payout", PAY_B, "e1")
    rid = "e1:approval:pay#0"
    one_line_error(*env.cli("approvals", "edit", rid, "--args", "{amount")[::2], "--args is not")
    one_line_error(
        *env.cli("approvals", "edit", rid, "--args", '{"account": "bolt", "amount": "x"}')[::2],
        "edited arguments for pay are invalid: amount: expected integer",
    )
    one_line_error(
        *env.cli("approvals", "edit", rid, "--args", '{"account": "bolt", "amnt": 5}')[::2],
        "amnt: not a parameter",
    )
    one_line_error(*env.cli("approvals", "edit", rid, "--args", "[1]")[::2], "JSON object")
    code, out, _ = env.cli("approvals", "show", rid, "--json")
    assert json.loads(out)["status"] == "pending"  # refused edits decided nothing

    code, out, _ = env.cli(
        "approvals", "edit", rid, "--args", '{"account": "bolt", "amount": 15}', "--by", "alice"
    )
    assert code == 0 and "edited arguments" in out
    # the text view ends with the audit log, as --json has it
    code, out, _ = env.cli("approvals", "show", rid)
    log_ = out[out.index("audit log:") :].splitlines()
    assert code == 0 and "requested by keel" in log_[1] and "edited by alice" in log_[2], out
    # which arguments the edit changed; their values stay with the request, not the log
    assert '{"fields": ["args", "original"], "changed": ["amount"]}' in log_[2]
    info = env.finish("payout", PAY_B, "e1")
    assert info.status is keel.RunStatus.SUCCEEDED and info.result == "paid 15 to bolt"
    code, out, _ = env.cli("approvals", "show", rid, "--json")
    shown = json.loads(out)
    assert shown["status"] == "edited"
    assert shown["decision"]["original"] == PAY_B
    assert shown["decision"]["args"] == {"account": "bolt", "amount": 15}
    assert [e["action"] for e in shown["audit"]] == ["requested", "edited"]


def test_review_list_verdict_export(env: Env) -> None:
    async def runs(app: keel.App) -> None:
        for run_id, text in (("s1", "refund me"), ("s2", "hi there"), ("s3", "so?")):
            await (await app.start("label", {"text": text}, id=run_id)).result(SETTLE)
        for part in app._drainable:
            await part.drain()

    env.app(runs)
    code, out, _ = env.cli("review")
    assert code == 0 and "s1:sample" in out
    code, out, _ = env.cli("review", "list", "--json")
    rows = json.loads(out)
    assert [r["id"] for r in rows] == ["s1:sample", "s2:sample", "s3:sample"]
    assert rows[0]["queue"] == "qa" and rows[0]["result"] == "billing"
    assert rows[0]["input"] == {"text": "refund me"}
    code, out, _ = env.cli("review", "show", "s2:sample", "--json")
    assert json.loads(out)["request"]["result"] == "general"

    one_line_error(*env.cli("review", "verdict", "s1:sample")[::2], "--correct or --incorrect")
    one_line_error(
        *env.cli("review", "verdict", "s1:sample", "--incorrect", "--label", "{")[::2],
        "--label is not valid JSON",
    )
    # checked against the workflow's return type (str), recorded when the run was sampled
    one_line_error(
        *env.cli("review", "verdict", "s2:sample", "--incorrect", "--label", "7")[::2],
        "label for s2:sample does not fit the output of workflow 'label': "
        "(label): expected string, got int",
    )
    assert env.cli("review", "verdict", "s1:sample", "--correct", "--by", "vera")[0] == 0
    code, out, _ = env.cli(
        "review", "verdict", "s2:sample", "--incorrect", "--label", '"greeting"', "--by", "vera"
    )
    assert code == 0 and "incorrect" in out
    one_line_error(
        *env.cli("review", "verdict", "s2:sample", "--correct")[::2], "a decision is final"
    )
    assert env.cli("review", "verdict", "s3:sample", "--incorrect", "--by", "vera")[0] == 0
    code, out, _ = env.cli("review", "list", "--json")
    assert json.loads(out) == []

    code, out, _ = env.cli("review", "export")
    cases = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [
        (c["run_id"], c["verdict"], c["case"], c["expected"], c["rejected_output"]) for c in cases
    ] == [
        ("s1", "correct", "positive", "billing", None),
        ("s2", "incorrect", "positive", "greeting", "general"),
        # wrong, and nobody said what is right: not a case expecting its own output
        ("s3", "incorrect", "negative", None, "general"),
    ]
    assert cases[1]["input"] == {"text": "hi there"} and cases[1]["output"] == "general"
    assert cases[1]["reviewer"] == "vera"


def test_correct_a_low_confidence_output(env: Env) -> None:
    from pydantic import BaseModel

    from keel.llm import Gateway, Reply, ScriptedModel

    class Tag(BaseModel):
        tag: str
        weight: int

    model = ScriptedModel(lambda m: Reply(content='{"tag": "misc", "weight": 1}', logprobs=[-2.0]))

    def guess_app() -> keel.App:
        app = keel.App(env.url, llm=Gateway({"m": model}, retry=keel.Retry(attempts=1)))

        @app.workflow()
        async def guess(ctx: keel.Context) -> dict[str, Any]:
            out = await ctx.llm.structured(Tag, "tag this", min_confidence=0.5)
            return out.model_dump()

        return app

    async def park() -> None:
        app = guess_app()
        try:
            info = await (await app.start("guess", id="g1")).settle(SETTLE)
            assert info.status is keel.RunStatus.WAITING
        finally:
            await app.close()

    asyncio.run(park())
    code, out, _ = env.cli("approvals", "list", "--kind", "low_confidence", "--json")
    [row] = json.loads(out)
    assert row["id"] == "g1:low_confidence:Tag#0" and row["tool"] is None
    code, out, _ = env.cli("approvals", "show", row["id"], "--json")
    shown = json.loads(out)
    assert shown["request"]["output"] == {"tag": "misc", "weight": 1}
    assert 0 < shown["request"]["score"] < 0.5

    one_line_error(
        *env.cli("approvals", "correct", row["id"], "--output", '{"tag": "x"}')[::2],
        "corrected output is invalid: weight: required",
    )
    code, out, _ = env.cli(
        "approvals", "correct", row["id"], "--output", '{"tag": "urgent", "weight": 5}'
    )
    assert code == 0 and "corrected" in out

    async def resume() -> Any:
        app = guess_app()
        try:
            return await (await app.start("guess", id="g1")).result(SETTLE)
        finally:
            await app.close()

    assert asyncio.run(resume()) == {"tag": "urgent", "weight": 5}
