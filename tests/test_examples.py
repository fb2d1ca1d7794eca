"""The examples behave as their READMEs say: triage with approval, 50-way doc summary.

Each test imports the example fresh by path (as `keel run examples/x.py:wf` does),
with its module-level `app` pointed at this test's store through KEEL_STORE, the
outbox under tmp_path and the offline model's latency scaled down. Every model call
goes through `ctx.llm` and LiteLLM to the examples' offline ScriptedModel.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import keel
from keel.engine.hooks import StepEvent
from keel.types import StepStatus
from tests.backends import fresh_url
from tests.limits import WAIT

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TIMEOUT = WAIT  # a bound, never a timing (tests/limits.py)

TICKET = {
    "id": "T-1042",
    "account_id": "acct_1003",
    "subject": "Charged twice for the March invoice",
    "body": "Our credit card was charged twice for the March invoice. Please refund it today.",
}


class Recorder(keel.Hooks):
    """Remembers which steps actually executed (replayed steps are not 'started')."""

    def __init__(self) -> None:
        self.started: list[StepEvent] = []
        self.finished: list[StepEvent] = []
        self.replayed: list[StepEvent] = []

    def step_started(self, ev: StepEvent) -> None:
        self.started.append(ev)

    def step_finished(self, ev: StepEvent) -> None:
        self.finished.append(ev)

    def step_replayed(self, ev: StepEvent) -> None:
        self.replayed.append(ev)

    def names(self) -> list[str]:
        return [ev.name for ev in self.started]


@pytest.fixture
def example_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # nothing may land in the repo's .keel/
    monkeypatch.delenv("KEEL_MODEL", raising=False)  # the offline model, whatever the shell has
    monkeypatch.setenv("KEEL_STORE", fresh_url(tmp_path))
    monkeypatch.setenv("KEEL_EXAMPLE_OUTBOX", str(tmp_path / "outbox"))
    monkeypatch.setenv("KEEL_EXAMPLE_LATENCY_SCALE", "0")
    monkeypatch.setenv("KEEL_POLL_INTERVAL", "0.02")
    return tmp_path


@pytest.fixture
async def load(example_env: Path) -> AsyncIterator[Callable[[str], ModuleType]]:
    """`load("support_triage")`: a fresh import of the example; its app closes at teardown."""
    loaded: list[tuple[str, ModuleType]] = []

    def do_load(stem: str) -> ModuleType:
        name = f"_keel_example_{stem}_{uuid.uuid4().hex[:8]}"
        spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{stem}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        loaded.append((name, module))
        return module

    yield do_load
    for name, module in loaded:
        await module.app.close()
        sys.modules.pop(name, None)


@pytest.fixture
def triage(load: Callable[[str], ModuleType]) -> ModuleType:
    return load("support_triage")


@pytest.fixture
def docs(load: Callable[[str], ModuleType]) -> ModuleType:
    return load("doc_summary")


# ---------------------------------------------------------------------------------------
# support_triage
# ---------------------------------------------------------------------------------------


async def test_triage_waits_for_approval_then_sends_exactly_once(triage: ModuleType) -> None:
    rec = Recorder()
    triage.app.hooks.add(rec)
    handle = await triage.app.start(triage.triage, {"ticket": TICKET}, id="t-approve")

    info = await handle.settle(TIMEOUT)
    assert info.status is keel.RunStatus.WAITING
    assert info.waiting_on == ["approval"]
    assert rec.names() == ["llm:classify", "lookup_account", "llm:draft"]
    assert triage.read_outbox() == []  # nothing leaves before a human decides

    view = await triage.review_view(handle.id)  # what a reviewer sees while it waits
    assert view["status"] == "awaiting_approval"
    assert (view["category"], view["urgency"], view["priority"]) == ("billing", "high", "P2")
    assert view["draft"].startswith("Hi Jonas,")

    await handle.signal("approval", {"approved": True, "reviewer": "dana"})
    outcome = await handle.result(TIMEOUT)

    assert isinstance(outcome, triage.Outcome)
    assert outcome.status == "sent" and outcome.reviewer == "dana" and not outcome.edited
    assert outcome.body == view["draft"]
    assert rec.names().count("send_reply") == 1
    [sent] = triage.read_outbox()
    assert sent["idempotency_key"] == "t-approve:send_reply#0"
    assert sent["message_id"] == outcome.message_id
    assert sent["to"] == "jonas@larkspur.example"
    assert sent["subject"] == "Re: Charged twice for the March invoice"
    assert sent["body"] == outcome.body

    final = await handle.info()
    assert final.status is keel.RunStatus.SUCCEEDED
    assert final.state is not None and final.state["status"] == "sent"
    assert final.state["reviewer"] == "dana"

    # Starting the same run id again returns the finished run: nothing re-executes.
    before = len(rec.started)
    again = await triage.app.start(triage.triage, {"ticket": TICKET}, id="t-approve")
    assert await again.result(TIMEOUT) == outcome
    assert len(rec.started) == before
    assert len(triage.read_outbox()) == 1


async def test_triage_edit_then_approve_sends_the_edited_body(triage: ModuleType) -> None:
    handle = await triage.app.start(triage.triage, {"ticket": TICKET})
    assert (await handle.settle(TIMEOUT)).status is keel.RunStatus.WAITING
    edited = "Hi Jonas,\n\nRefund issued for INV-2291 today.\n\nDana"
    await handle.signal("approval", {"approved": True, "reviewer": "dana", "edited_body": edited})
    outcome = await handle.result(TIMEOUT)
    assert outcome.status == "sent" and outcome.edited and outcome.body == edited
    assert [m["body"] for m in triage.read_outbox()] == [edited]


async def test_triage_reject_sends_nothing(triage: ModuleType) -> None:
    rec = Recorder()
    triage.app.hooks.add(rec)
    handle = await triage.app.start(triage.triage, {"ticket": TICKET})
    assert (await handle.settle(TIMEOUT)).status is keel.RunStatus.WAITING
    await handle.signal("approval", {"approved": False, "reviewer": "lee"})
    outcome = await handle.result(TIMEOUT)

    assert outcome.status == "rejected" and outcome.reviewer == "lee"
    assert outcome.message_id is None and outcome.body is None
    assert "send_reply" not in rec.names()
    assert all(s.name != "send_reply" for s in await triage.app.steps(handle.id))
    assert triage.read_outbox() == []
    assert not triage.outbox_file().exists()


async def test_triage_unknown_account_fails_with_a_clear_error(triage: ModuleType) -> None:
    ticket = {**TICKET, "account_id": "acct_9999"}
    handle = await triage.app.start(triage.triage, {"ticket": ticket})
    with pytest.raises(keel.RunFailed) as caught:
        await handle.result(TIMEOUT)

    err = caught.value.error
    assert err is not None
    assert err.type == "UnknownAccountError"
    assert err.step == "lookup_account#0"
    assert "'acct_9999'" in err.message and "acct_1003" in err.message  # says what is known
    assert "acct_9999" in str(caught.value)
    steps = [s.name for s in await triage.app.steps(handle.id)]
    assert steps == ["llm:classify", "lookup_account"]  # stopped there: no draft, no wait
    assert triage.read_outbox() == []


async def test_triage_approval_timeout_expires_the_ticket(triage: ModuleType) -> None:
    handle = await triage.app.start(triage.triage, {"ticket": TICKET, "approval_timeout": 0.2})
    outcome = await handle.result(TIMEOUT)
    assert outcome.status == "expired" and outcome.reviewer is None
    assert triage.read_outbox() == []
    signal_step = next(s for s in await triage.app.steps(handle.id) if s.kind == "signal")
    assert signal_step.status is StepStatus.ERROR
    assert signal_step.error is not None and signal_step.error.type == "SignalTimeout"


async def test_triage_malformed_decision_fails_with_a_clear_error(triage: ModuleType) -> None:
    handle = await triage.app.start(triage.triage, {"ticket": TICKET})
    assert (await handle.settle(TIMEOUT)).status is keel.RunStatus.WAITING
    await handle.signal("approval", {"approve": "yes"})  # typo'd field, no reviewer
    with pytest.raises(keel.RunFailed) as caught:
        await handle.result(TIMEOUT)
    err = caught.value.error
    assert err is not None and err.type == "InvalidDecision"
    assert '"approved": true|false' in err.message
    assert triage.read_outbox() == []


async def test_send_reply_reexecuted_after_a_crash_does_not_send_twice(
    triage: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker dies after the provider accepted the email but before Keel journaled it.

    Keel finds the send's intent without a result and asks the tool's reconcile hook,
    which finds the email in the outbox: the step takes that receipt, nothing is re-sent.
    """
    real_deliver = triage.deliver
    calls: list[str] = []

    def deliver_then_die_once(key: str, message: dict[str, Any]) -> Any:
        receipt = real_deliver(key, message)
        calls.append(key)
        if len(calls) == 1:
            raise asyncio.CancelledError()  # the worker is interrupted right here
        return receipt

    monkeypatch.setattr(triage, "deliver", deliver_then_die_once)
    handle = await triage.app.start(triage.triage, {"ticket": TICKET}, id="t-crash")
    assert (await handle.settle(TIMEOUT)).status is keel.RunStatus.WAITING
    await handle.signal("approval", {"approved": True, "reviewer": "dana"})
    outcome = await handle.result(TIMEOUT)

    assert outcome.status == "sent"
    assert calls == ["t-crash:send_reply#0"]  # executed once, never blindly again
    [sent] = triage.read_outbox()
    assert sent["message_id"] == outcome.message_id
    step = next(s for s in await triage.app.steps(handle.id) if s.name == "send_reply")
    assert step.attempts == 2  # the interrupted call, then the reconciliation


async def test_find_sent_reconciles_from_the_outbox(triage: ModuleType) -> None:
    msg = {"ticket_id": "T-1", "to": "a@example.com", "subject": "s", "body": "b"}
    with pytest.raises(keel.EffectNotApplied):
        triage.find_sent("run-x:send_reply#0", **msg)
    sent = triage.deliver("run-x:send_reply#0", msg)
    assert triage.find_sent("run-x:send_reply#0", **msg).message_id == sent.message_id


async def test_deliver_is_idempotent_per_key(triage: ModuleType) -> None:
    msg = {"ticket_id": "T-1", "to": "a@example.com", "subject": "s", "body": "b"}
    first = triage.deliver("run-a:send_reply#0", msg)
    second = triage.deliver("run-a:send_reply#0", {**msg, "body": "changed"})
    other = triage.deliver("run-b:send_reply#0", msg)
    assert not first.duplicate and second.duplicate and not other.duplicate
    assert second.message_id == first.message_id != other.message_id
    assert [m["idempotency_key"] for m in triage.read_outbox()] == [
        "run-a:send_reply#0",
        "run-b:send_reply#0",
    ]
    assert triage.read_outbox()[0]["body"] == "b"


async def test_a_draft_failing_its_checkpoint_escalates_then_a_fix_is_sent(
    triage: ModuleType,
) -> None:
    ticket = next(t for t in triage.SAMPLE_TICKETS if t.id == "T-1045")
    handle = await triage.app.start(triage.triage, {"ticket": ticket}, id="t-esc")
    info = await handle.settle(TIMEOUT)
    assert info.status is keel.RunStatus.WAITING
    [esc] = await triage.app.escalations.list(queue="support-ops")
    assert esc.kind == "phase" and esc.packet.phase == "respond"
    assert "does not greet the customer by name" in esc.packet.reason
    assert [j["key"].rsplit("/", 1)[-1] for j in esc.packet.journal] == ["llm:draft#0"]
    assert esc.packet.state is not None and esc.packet.state["draft"].startswith("Hi there")

    with pytest.raises(keel.InputError):  # not a state field of the right type
        await triage.app.escalations.resolve(esc.id, result={"draft": 7}, by="kim")
    fixed = "Hello Quayside team,\n\nWe are sending replacements for order 7781 today."
    # the checkpoint still fails without a contact name to greet: refused, still open
    with pytest.raises(keel.InputError, match="does not greet the customer by name"):
        await triage.app.escalations.resolve(esc.id, result={"draft": fixed}, by="kim")
    edits = {"contact_name": "Quayside team", "draft": fixed}
    await triage.app.escalations.resolve(esc.id, result=edits, by="kim")
    info = await handle.settle(TIMEOUT)
    assert info.waiting_on == ["approval"] and info.state is not None
    assert info.state["draft"] == fixed and info.state["contact_name"] == "Quayside team"

    await handle.signal("approval", {"approved": True, "reviewer": "dana"})
    outcome = await handle.result(TIMEOUT)
    assert outcome.status == "sent" and outcome.body == fixed
    [sent] = triage.read_outbox()
    assert sent["body"] == fixed


async def test_transient_crm_errors_are_retried(
    triage: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_EXAMPLE_FLAKY_CRM", "1")
    monkeypatch.setattr(triage.lookup_account.definition, "retry", keel.Retry(attempts=3,
                        backoff=0.01))
    handle = await triage.app.start(triage.triage, {"ticket": TICKET}, id="t-flaky")
    assert (await handle.settle(TIMEOUT)).status is keel.RunStatus.WAITING
    step = next(s for s in await triage.app.steps(handle.id) if s.name == "lookup_account")
    assert step.attempts == 2 and step.status.value == "ok"


async def test_triage_model_calls_are_journaled_with_usage_and_cost(triage: ModuleType) -> None:
    handle = await triage.app.start(triage.triage, {"ticket": TICKET}, id="t-llm")
    assert (await handle.settle(TIMEOUT)).status is keel.RunStatus.WAITING

    llm = {s.name: s for s in await triage.app.steps(handle.id) if s.kind == "llm"}
    assert sorted(llm) == ["llm:classify", "llm:draft"]
    for step in llm.values():
        out = step.output
        assert out["model"] == "keel-scripted/offline-triage" and out["provider"] == "keel-scripted"
        assert out["usage"]["input_tokens"] > 50 and out["usage"]["output_tokens"] > 10
        assert 0 < out["cost_usd"] < 0.001  # priced as gpt-4o-mini: fractions of a cent
        assert out["cache_hit"] is False
    classify, draft = llm["llm:classify"].output, llm["llm:draft"].output
    assert "Charged twice for the March invoice" in classify["request"]["messages"][0]["content"]
    assert classify["request"]["params"]["logprobs"] is True  # asked for: min_confidence
    assert classify["request"]["params"]["response_format"]["type"] == "json_schema"
    assert classify["logprobs"]  # the confidence is computed from these
    prompt = draft["request"]["messages"][0]["content"]
    assert "Customer name: Jonas Weber" in prompt and "Account tier: pro" in prompt
    assert "SLA: 24 hours" in prompt and "Category: billing" in prompt
    assert draft["content"].startswith("Hi Jonas,")

    # The same usage is metered in the store, per run, for `keel costs`.
    [row] = await triage.app.store.usage_report("run")
    assert row.calls == 2 and row.cost_usd == pytest.approx(
        sum(s.output["cost_usd"] for s in llm.values())
    )


async def test_triage_inconsistent_label_is_corrected_with_feedback(triage: ModuleType) -> None:
    ticket = {
        **TICKET,
        "subject": "Exports crash",
        "body": "The nightly export crashes and we had data loss in yesterday's file.",
    }
    handle = await triage.app.start(triage.triage, {"ticket": ticket}, id="t-fix")
    info = await handle.settle(TIMEOUT)
    assert info.status is keel.RunStatus.WAITING and info.state is not None
    assert (info.state["category"], info.state["urgency"]) == ("bug", "high")

    first, second = [s for s in await triage.app.steps(handle.id) if s.name == "llm:classify"]
    assert json.loads(first.output["content"])["urgency"] == "critical"  # rejected
    feedback = second.output["request"]["messages"][-1]["content"]
    assert "urgency 'critical' is reserved for outages" in feedback


async def test_triage_low_confidence_label_goes_to_a_person(
    triage: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(triage, "MIN_CONFIDENCE", 0.9)
    ticket = next(t for t in triage.SAMPLE_TICKETS if t.id == "T-1045")  # no keywords: 0.5
    handle = await triage.app.start(triage.triage, {"ticket": ticket}, id="t-unsure")
    info = await handle.settle(TIMEOUT)
    assert info.status is keel.RunStatus.WAITING

    [req] = await triage.app.approvals.list(queue="support-ops", kind="low_confidence")
    assert req.run_id == "t-unsure" and info.waiting_on == [f"review:{req.id}"]
    assert req.request["score"] == pytest.approx(0.5)  # exp(mean(logprob)), from the model
    assert req.request["threshold"] == 0.9
    assert req.request["output"]["category"] == "general"

    corrected = {**req.request["output"], "category": "bug", "urgency": "high"}
    await triage.app.approvals.correct(req.id, corrected, by="kim")
    info = await handle.settle(TIMEOUT)
    assert info.state is not None and (info.state["category"], info.state["priority"]) == (
        "bug",
        "P2",
    )
    draft = next(s for s in await triage.app.steps(handle.id) if s.name == "llm:draft")
    assert "Category: bug" in draft.output["request"]["messages"][0]["content"]


async def test_keel_model_swaps_in_another_model_unchanged(
    load: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    """KEEL_MODEL replaces every alias; here with a second scripted model standing in for
    e.g. openai/gpt-4o-mini, so the workflow runs against it without a network."""
    from _offline_model import offline_model

    stand_in = offline_model("stand-in-real-model")
    monkeypatch.setenv("KEEL_MODEL", stand_in.model)
    triage = load("support_triage")
    assert triage.app.gateway.spec("fast").model == "keel-scripted/stand-in-real-model"

    handle = await triage.app.start(triage.triage, {"ticket": TICKET})
    assert (await handle.settle(TIMEOUT)).status is keel.RunStatus.WAITING
    models = {s.output["model"] for s in await triage.app.steps(handle.id) if s.kind == "llm"}
    assert models == {"keel-scripted/stand-in-real-model"}
    assert len(stand_in.calls) == 2


async def test_offline_classifier_is_rule_based_and_deterministic(triage: ModuleType) -> None:
    from _offline_model import classify_ticket

    def label(text: str) -> Any:
        return triage.Classification.model_validate(classify_ticket(text))

    got = {
        t.id: (c.category, c.urgency)
        for t in triage.SAMPLE_TICKETS
        for c in [label(f"{t.subject}\n\n{t.body}")]
    }
    assert got == {
        "T-1042": ("billing", "high"),
        "T-1043": ("outage", "critical"),
        "T-1044": ("feature_request", "low"),
        "T-1045": ("general", "normal"),
    }
    unclear = label("Hello, quick question about your company.")
    assert (unclear.category, unclear.confidence) == ("general", 0.5)
    locked_out = label("I forgot my password and I'm locked out")
    assert locked_out.category == "account_access"
    acct = triage.CRM["acct_1001"]  # enterprise moves up one level, never above P1
    assert triage.priority_for(label("outage for all users"), acct) == "P1"
    assert triage.priority_for(label("minor bug, no rush"), acct) == "P3"


# ---------------------------------------------------------------------------------------
# doc_summary
# ---------------------------------------------------------------------------------------


def _expected(docs_mod: ModuleType) -> dict[str, Any]:
    """The report's numbers, computed independently of the workflow."""
    from _offline_model import read_figures, summarize_report

    revenue = net = 0.0
    risks: dict[str, int] = {}
    for i, d in enumerate(docs_mod.synthetic_documents()):
        if i in docs_mod.MALFORMED:
            continue
        fig = read_figures(d.text)
        revenue += fig["revenue_musd"]
        net += fig["net_income_musd"]
        for theme in summarize_report(d.company, d.quarter, d.text, fig)["risks"]:
            risks[theme] = risks.get(theme, 0) + 1
    return {"revenue": round(revenue, 1), "net": round(net, 1), "risks": risks}


async def test_doc_summary_tolerates_the_malformed_documents(docs: ModuleType) -> None:
    corpus = docs.synthetic_documents()
    assert len(corpus) == 50 and len({d.id for d in corpus}) == 50
    assert corpus == docs.synthetic_documents()  # deterministic

    handle = await docs.app.start(docs.summarize_docs, {})
    report = await handle.result(TIMEOUT)

    assert isinstance(report, docs.Report)
    assert (report.documents, report.succeeded) == (50, 48)
    assert report.required == "at least 45 of 50 items"
    assert [(f.index, f.doc_id) for f in report.failed] == [
        (17, corpus[17].id),
        (38, corpus[38].id),
    ]
    # The model could not find the figure, so its answer lacked a required field, twice.
    assert all(f.error_type == "ValidationFailed" for f in report.failed)
    assert "FinancialFigures output still invalid after 2 attempt(s)" in report.failed[0].error
    assert "revenue_musd: Field required" in report.failed[0].error
    assert "net_income_musd: Field required" in report.failed[1].error

    expected = _expected(docs)
    assert report.total_revenue_musd == pytest.approx(expected["revenue"], abs=0.05)
    assert report.total_net_income_musd == pytest.approx(expected["net"], abs=0.05)
    assert report.net_margin_pct == round(
        report.total_net_income_musd / report.total_revenue_musd * 100, 1
    )

    # Per-company lines: 25 companies, the two with a failed quarter have one line each.
    assert len(report.companies) == 25
    quarters = {c.company: len(c.quarters) for c in report.companies}
    assert quarters[corpus[17].company] == 1 and quarters[corpus[38].company] == 1
    assert sum(quarters.values()) == 48
    assert sum(c.revenue_musd for c in report.companies) == pytest.approx(
        report.total_revenue_musd, abs=0.5
    )
    revenues = [c.revenue_musd for c in report.companies]
    assert revenues == sorted(revenues, reverse=True)
    assert report.loss_making == sorted(
        c.company for c in report.companies if c.latest_net_margin_pct < 0
    )
    assert report.loss_making  # the corpus has loss-makers, and they are reported

    # Top risks: the five most frequent themes, counted per successful document.
    from _offline_model import RISK_KEYWORDS

    assert tuple(RISK_KEYWORDS) == docs.RISK_THEMES  # the offline model knows the list
    counts = [r.documents for r in report.top_risks]
    assert len(counts) == 5 and counts == sorted(counts, reverse=True)
    assert {r.theme: r.documents for r in report.top_risks}.items() <= expected["risks"].items()
    assert counts[0] == max(expected["risks"].values())

    # The journal has one child per document, each with its own steps.
    steps = await docs.app.steps(handle.id)
    children = [s for s in steps if s.kind == "child"]
    assert len(children) == 50
    assert sorted(s.position for s in children if s.status is StepStatus.ERROR) == [17, 38]
    llm = [s for s in steps if s.kind == "llm"]
    assert sum(s.name == "llm:summarize" for s in llm) == 48
    assert sum(s.name == "llm:extract" for s in llm) == 52  # 50, and one feedback retry each
    assert all(s.output["usage"]["output_tokens"] > 0 and s.output["cost_usd"] > 0 for s in llm)


async def test_doc_summary_malformed_document_fails_after_a_feedback_retry(
    docs: ModuleType,
) -> None:
    handle = await docs.app.start(docs.summarize_docs, {})
    await handle.result(TIMEOUT)
    steps = await docs.app.steps(handle.id)
    child = next(s for s in steps if s.kind == "child" and s.position == 17)
    assert child.error is not None and child.error.type == "ValidationFailed"
    assert child.error.data["messages"] == ["revenue_musd: Field required"]

    first, retry = [s for s in steps if s.key.startswith(child.key + "/llm:extract#")]
    assert "revenue_musd" not in json.loads(first.output["content"])  # it did not guess
    sent = retry.output["request"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"] == first.output["content"]  # its own rejected answer
    assert "Your previous answer was rejected" in sent[2]["content"]
    assert "revenue_musd: Field required" in sent[2]["content"]
    assert "table not recognised" in sent[0]["content"]  # the document itself
    assert not any(s.key.startswith(child.key + "/llm:summarize") for s in steps)


async def test_doc_summary_rate_limited_calls_are_retried(docs: ModuleType) -> None:
    handle = await docs.app.start(docs.summarize_docs, {})
    report = await handle.result(TIMEOUT)
    assert report.succeeded == 48

    summaries = [s for s in await docs.app.steps(handle.id) if s.name == "llm:summarize"]
    retried = [s for s in summaries if s.attempts == 2]
    assert 3 <= len(retried) <= 12  # ~15% of 48, seeded per report: the same on every run
    assert all(s.attempts in (1, 2) and s.status is StepStatus.OK for s in summaries)
    # Each 429 reached the model; the retry is a second request with the same messages.
    calls = [c for c in docs.OFFLINE_MODEL.calls if "<figures>" in c["messages"][0]["content"]]
    assert len(calls) == 48 + len(retried)


async def test_a_429_survives_litellm_and_is_retryable(example_env: Path) -> None:
    """LiteLLM wraps what a provider raises in its own exception; the status and the
    Retry-After header must survive that, so Keel classifies it as transient."""
    from _offline_model import offline_model

    from keel.llm.gateway import CallContext
    from keel.policy.retry import is_transient, retry_after_of, status_of

    always_limited = offline_model("always-limited", rate_limited=1.0, retry_after=0.25)
    gateway = keel.llm.Gateway(models={"m": always_limited})
    prompt = "Company: A\nQuarter: Q1\n<figures>\n{}\n</figures>\n<report>\nx\n</report>"
    with pytest.raises(keel.ModelUnavailable) as caught:
        await gateway.complete([{"role": "user", "content": prompt}], CallContext())
    wrapped = caught.value.__cause__
    assert wrapped is not None and type(wrapped).__name__ == "RateLimitError"  # LiteLLM's
    assert status_of(wrapped) == 429 and retry_after_of(wrapped) == pytest.approx(0.25)
    assert is_transient(wrapped) and is_transient(caught.value)
    assert retry_after_of(caught.value) == pytest.approx(0.25)  # what the step's retry waits



async def test_doc_summary_policy_fails_the_run_when_too_many_fail(docs: ModuleType) -> None:
    handle = await docs.app.start(docs.summarize_docs, {"require_fraction": 1.0})
    with pytest.raises(keel.RunFailed) as caught:
        await handle.result(TIMEOUT)
    err = caught.value.error
    assert err is not None and err.type == "MapFailed"
    assert "2 of 50 items failed" in err.message and "at least 50 of 50" in err.message
    assert err.data["failed"] == [17, 38]


async def test_doc_summary_accepts_documents_as_input(docs: ModuleType) -> None:
    good = docs.synthetic_documents()[:3]
    broken = good[0].model_copy(update={"id": "X-1", "text": "Revenue: unknown"})
    handle = await docs.app.start(
        docs.summarize_docs,
        {"docs": [d.model_dump() for d in [*good, broken]], "require_fraction": 0.75},
    )
    report = await handle.result(TIMEOUT)
    assert (report.documents, report.succeeded) == (4, 3)
    assert [(f.index, f.doc_id) for f in report.failed] == [(3, "X-1")]


async def test_doc_summary_fan_out_respects_concurrency(
    load: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_EXAMPLE_LATENCY_SCALE", "0.02")  # a few ms per model call
    docs = load("doc_summary")  # the offline model's latency is read at import
    in_flight = peak = 0

    class Gauge(keel.Hooks):
        def step_started(self, ev: StepEvent) -> None:
            nonlocal in_flight, peak
            if ev.kind == "child":
                in_flight += 1
                peak = max(peak, in_flight)

        def step_finished(self, ev: StepEvent) -> None:
            nonlocal in_flight
            in_flight -= ev.kind == "child"

        step_failed = step_finished

    docs.app.hooks.add(Gauge())
    report = await (await docs.app.start(docs.summarize_docs, {"concurrency": 5})).result(TIMEOUT)
    assert report.succeeded == 48
    assert peak == 5  # items really overlap, and never more than asked


async def test_doc_summary_rerunning_the_same_id_does_no_work(docs: ModuleType) -> None:
    rec = Recorder()
    docs.app.hooks.add(rec)
    first = await (await docs.app.start(docs.summarize_docs, {}, id="docs-1")).result(TIMEOUT)
    executed = len(rec.started)
    assert rec.names().count("llm:extract") == 52  # two feedback retries
    assert rec.names().count("llm:summarize") == 48

    again = await (await docs.app.start(docs.summarize_docs, {}, id="docs-1")).result(TIMEOUT)
    assert again == first
    assert len(rec.started) == executed


async def test_doc_summary_resumes_after_interruption_without_redoing_items(
    load: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_EXAMPLE_LATENCY_SCALE", "0.05")  # ~9 ms per model call
    docs = load("doc_summary")
    rec = Recorder()
    docs.app.hooks.add(rec)
    app = docs.app
    ten_done = asyncio.Event()

    class Progress(keel.Hooks):
        def map_progress(self, run_id: str, key: str, done: int, total: int) -> None:
            if done >= 10:
                ten_done.set()

    app.hooks.add(Progress())
    handle = await app.start(docs.summarize_docs, {"concurrency": 4}, id="docs-resume")
    await asyncio.wait_for(ten_done.wait(), TIMEOUT)
    await app.close()  # the worker stops mid-map; the run goes back to the queue

    info = await app.get_run("docs-resume")
    assert not info.status.terminal
    done_before = {s.key for s in await app.steps("docs-resume") if s.kind == "child"}
    assert 10 <= len(done_before) < 50
    boundary = len(rec.started)

    handle = await app.start(docs.summarize_docs, {"concurrency": 4}, id="docs-resume")
    report = await handle.result(TIMEOUT)

    resumed = [ev.key for ev in rec.started[boundary:]]
    redone = [k for k in resumed if any(k == c or k.startswith(c + "/") for c in done_before)]
    assert redone == []  # finished documents are replayed from the journal, not re-run
    assert {ev.key for ev in rec.replayed} >= done_before
    assert sum(ev.kind == "child" for ev in rec.started[boundary:]) == 50 - len(done_before)
    assert (report.documents, report.succeeded) == (50, 48)
    assert [f.index for f in report.failed] == [17, 38]


# ---------------------------------------------------------------------------------------
# Entry points: `python examples/x.py` and `keel run examples/x.py:wf`
# ---------------------------------------------------------------------------------------


def _env(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "KEEL_STORE": fresh_url(tmp),
        "KEEL_EXAMPLE_OUTBOX": str(tmp / "outbox"),
        "KEEL_EXAMPLE_LATENCY_SCALE": "0",
    }


def test_importing_an_example_does_not_import_litellm(example_env: Path) -> None:
    """LiteLLM takes seconds to import: the first model call imports it, not the example."""
    code = (
        "import importlib.util, sys\n"
        "for stem in ('support_triage', 'doc_summary', 'support_agent'):\n"
        f"    path = {str(EXAMPLES)!r} + '/' + stem + '.py'\n"
        "    spec = importlib.util.spec_from_file_location(stem, path)\n"
        "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print(sorted(m for m in ('litellm', 'httpx', 'openai') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=example_env,
        env=_env(example_env),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
    ).stdout
    assert out.strip() == "[]"


def test_support_triage_script_runs(example_env: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "support_triage.py")],
        cwd=example_env,
        env=_env(example_env),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
    ).stdout
    assert "WAITING, waiting on ['approval']" in out
    assert '"status": "sent"' in out
    assert len((example_env / "outbox" / "sent.jsonl").read_text().splitlines()) == 1


def test_doc_summary_script_runs(example_env: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "doc_summary.py")],
        cwd=example_env,
        env=_env(example_env),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
    ).stdout
    assert "48/50 documents processed" in out
    assert "Failed documents:" in out and "#17 " in out and "#38 " in out


def test_doc_summary_runs_through_the_cli(example_env: Path) -> None:
    cmd = [
        sys.executable,
        "-c",
        "from keel.cli import main; main()",
        "run",
        f"{EXAMPLES / 'doc_summary.py'}:summarize_docs",
        "--input",
        "{}",
        "--json",
    ]
    proc = subprocess.run(
        cmd, cwd=example_env, env=_env(example_env), capture_output=True, text=True, timeout=WAIT
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "SUCCEEDED"
    assert summary["result"]["succeeded"] == 48
    assert [f["index"] for f in summary["result"]["failed"]] == [17, 38]


# ---------------------------------------------------------------------------------------
# refunds: an irreversible tool behind an approval gate
# ---------------------------------------------------------------------------------------


@pytest.fixture
def refunds(load: Callable[[str], ModuleType]) -> ModuleType:
    return load("refunds")


async def test_refund_over_the_limit_waits_then_an_edited_amount_is_refunded_once(
    refunds: ModuleType, example_env: Path
) -> None:
    app = refunds.app
    handle = await app.start(refunds.refund, {"charge_id": "ch_1042", "reason": "double"},
                             id="rf-1")
    info = await handle.settle(TIMEOUT)
    assert info.status is keel.RunStatus.WAITING
    assert not refunds.ledger().exists()  # nothing refunded before a person decided
    [req] = await app.approvals.list(queue="payments")
    assert req.tool == "issue_refund" and req.args == {"charge_id": "ch_1042", "amount": 80.0}
    assert "need a person" in req.request["reason"]
    with pytest.raises(keel.InputError, match="amount"):
        await app.approvals.edit(req.id, {"charge_id": "ch_1042", "amount": "all"}, by="dana")
    await app.approvals.edit(req.id, {"charge_id": "ch_1042", "amount": 40.0}, by="dana")
    out = await handle.result(TIMEOUT)
    assert out["status"] == "refunded" and out["amount"] == 40.0
    assert refunds.ledger().read_text().count("\n") == 1
    actions = [a["action"] for a in await app.approvals.audit(req.id)]
    assert actions == ["requested", "edited"]


async def test_small_refunds_need_no_approval_and_rejections_are_handled(
    refunds: ModuleType,
) -> None:
    app = refunds.app
    small = await app.start(refunds.refund, {"charge_id": "ch_1043", "reason": "late"})
    assert (await small.result(TIMEOUT))["amount"] == 12.5
    big = await app.start(refunds.refund, {"charge_id": "ch_1042", "reason": "x"}, id="rf-2")
    await big.settle(TIMEOUT)
    [req] = await app.approvals.list(queue="payments")
    await app.approvals.reject(req.id, "not our fault", by="dana")
    out = await big.result(TIMEOUT)
    assert out["status"] == "rejected" and "not our fault" in out["why"]


# -- account sync: a secret by reference ------------------------------------------------


async def test_account_sync_reveals_the_crm_key_only_inside_the_tool(
    load: Callable[[str], ModuleType], example_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync = load("account_sync")
    key = "crm_live_4f0c8d2e9a7b"
    monkeypatch.setenv("KEEL_EXAMPLE_CRM_KEY", key)
    ref = {"$secret": "env:KEEL_EXAMPLE_CRM_KEY"}
    handle = await sync.app.start(sync.sync, {"account_id": "acct_1001", "crm_key": ref})
    out = await handle.result(TIMEOUT)
    assert out["account"] == "acct_1001" and out["crm_id"].startswith("crm_")
    steps = {s.key: s for s in await sync.app.steps(handle.id)}
    assert steps["push_to_crm#0"].input["crm_key"] == ref  # the reference, never the key
    assert (await handle.info()).input["crm_key"] == ref
    stored = b"".join(p.read_bytes() for p in example_env.glob("keel.db*"))
    assert key.encode() not in stored
    # a key the CRM refuses fails the step (after its retries), naming why, not the key
    monkeypatch.setenv("KEEL_EXAMPLE_CRM_KEY", "wrong")
    bad = await sync.app.start(sync.sync, {"account_id": "acct_1003", "crm_key": ref})
    with pytest.raises(keel.RunFailed) as failed:
        await bad.result(TIMEOUT)
    assert failed.value.error is not None and "CRM keys start with crm_" in str(failed.value)


# -- oracle: a feature of one's own on the durable-operation primitive ------------------


async def test_oracle_is_asked_once_across_crashes_and_restarts(
    load: Callable[[str], ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The question is journaled before it leaves; every re-execution replays the oracle.

    A crash right after the hand-over resends it under the same id (the inbox keeps one),
    a restarted worker takes the answer, and a crash after the answer replays it: the
    inbox holds one question and the third execution hands nothing over at all.
    """
    first = load("oracle")
    handed: list[str] = []
    real_hand_over = first.hand_over

    def hand_over_then_die_once(ask_id: str, signal: str, question: str) -> None:
        real_hand_over(ask_id, signal, question)
        handed.append(ask_id)
        if len(handed) == 1:
            raise asyncio.CancelledError()  # the worker is interrupted right here

    monkeypatch.setattr(first, "hand_over", hand_over_then_die_once)
    order = {"order_id": "ord-1", "city": "Bergen"}
    handle = await first.app.start(first.plan_delivery, order, id="ord-1")
    info = await handle.settle(TIMEOUT)
    assert info.status is keel.RunStatus.WAITING and info.waiting_on == ["oracle:oracle#0"]
    assert handed == ["ord-1:oracle#0"] * 2  # resent after the crash, same id
    [asked] = [json.loads(line) for line in first.inbox().read_text().splitlines()]
    assert asked == {
        "id": "ord-1:oracle#0",
        "signal": "oracle:oracle#0",
        "question": "Will it rain in Bergen tomorrow?",
    }
    await first.app.close()  # the worker goes away while the run waits

    second = load("oracle")  # a restarted worker, same store
    rec = Recorder()
    second.app.hooks.add(rec)
    monkeypatch.setattr(second, "hand_over", lambda *a: handed.append(a[0]) or real_hand_over(*a))
    booked: list[str] = []

    def reserve_after_a_crash(order_id: str, carrier: str) -> str:
        booked.append(carrier)
        if len(booked) == 1:
            raise asyncio.CancelledError()  # the oracle's answer is already journaled
        return str(first.reserve(order_id, carrier))

    monkeypatch.setattr(second, "reserve", reserve_after_a_crash)
    await second.app.signal("ord-1", "oracle:oracle#0", "yes, heavy rain")
    out = await (await second.app.start(second.plan_delivery, order, id="ord-1")).result(TIMEOUT)

    assert out == {
        "order_id": "ord-1",
        "city": "Bergen",
        "forecast": "yes, heavy rain",
        "booking": "covered-van/ord-1",
    }
    assert booked == ["covered van"] * 2
    assert handed == ["ord-1:oracle#0"] * 3  # the answered execution never hands over
    assert "oracle" in [ev.name for ev in rec.replayed]
    assert len(second.inbox().read_text().splitlines()) == 1  # asked exactly once
    [oracle] = [s for s in await second.app.steps("ord-1") if s.key == "oracle#0"]
    assert oracle.status is StepStatus.OK and oracle.output == "yes, heavy rain"


# -- support_agent: the three memory tiers in one conversation -----------------------------


@pytest.fixture
def agent(load: Callable[[str], ModuleType]) -> ModuleType:
    return load("support_agent")


async def _contexts(mod: ModuleType, run_ids: list[str]) -> list[dict[str, Any]]:
    return [c for rid in run_ids for c in await mod.contexts(rid)]


async def test_support_agent_learns_in_one_session_and_the_next_one_finds_it(
    agent: ModuleType,
) -> None:
    """Two conversations with Maya (real MiniLM embeddings, the offline model): session
    fields carry the order between turns, long-term hits come only above the threshold
    (none for an unrelated question), every model call stays within its budget, and the
    first conversation's extraction teaches the second where her parcels go."""
    app = agent.app
    seeded = [
        await (
            await app.start(agent.seed_customer, {"customer_id": "1042"}, id="seed-1042")
        ).result(TIMEOUT)
        for _ in range(2)  # a second start replays the run: nothing is added twice
    ]
    assert seeded[0] == seeded[1]
    assert len(await app.memory.list(namespace="customer:1042")) == len(agent.KNOWN_FACTS["1042"])

    first = await agent.conversation("1042", "chat-a", agent.FIRST_CHAT, say="quiet")
    where, replace, unrelated, bye = first
    assert where.fields == {"customer_name": "Maya Patel"} and where.tools == ["lookup_order"]
    assert [h.text for h in where.memory] == [agent.KNOWN_FACTS["1042"][3]]  # a lost order
    assert "sorry this happened again after order A-6120" in where.reply
    # the second message names no order: the session's field supplied it
    assert "A-7781" not in agent.FIRST_CHAT[1]
    assert replace.fields == {
        "customer_name": "Maya Patel",
        "order_id": "A-7781",
        "open_issue": "order A-7781 lost in transit",
    }
    [reship] = [s for s in await app.steps("chat-a.2") if s.name == "reship_order"]
    assert reship.input == {"order_id": "A-7781", "express": True}, reship.input
    # long-term memory: the premium plan made it express; only hits above the threshold
    assert any("premium member" in h.text for h in replace.memory)
    assert "Express is free with your premium membership" in replace.reply
    assert all(h.score >= agent.MIN_RELEVANCE for t in first for h in t.memory)
    assert unrelated.memory == [] and "public holidays" in unrelated.reply
    [ctx] = await agent.contexts("chat-a.3")
    assert "memory" not in [b["name"] for b in ctx["blocks"]]  # no block, not an empty one

    # working memory: under budget on every call; the carrier record cut by keep=
    ids = [f"chat-a.{n}" for n in range(1, 5)]
    contexts = await _contexts(agent, ids)
    assert len(contexts) == 6
    assert all(c["tokens"] <= c["budget"] == agent.BUDGET for c in contexts)
    cut = {b["name"] for c in contexts for b in c["blocks"] if b["action"] != "included"}
    assert cut == {"conversation"}  # older turns give way; the session fields hold the facts
    steps = await app.steps("chat-a.1")
    [lookup] = [s for s in steps if s.name == "lookup_order"]
    assert set(lookup.output) == set(agent.OrderStatus.model_fields)
    assert any(s.key == f"{lookup.key}/full#0" for s in steps)  # the full record, out of line

    # the extraction ran on its own; each item has a status
    assert bye.extraction is not None and bye.extraction.startswith("chat-a.4~memory-")
    items = await agent.learnt(bye.extraction)
    assert [status for status, _ in items] == ["added", "duplicate", "added"]
    assert items[1][1] == agent.KNOWN_FACTS["1042"][0]  # said again: not stored twice
    info = await app.get_run(bye.extraction)
    assert info.session == "chat-a"

    second = await agent.conversation("1042", "chat-b", agent.SECOND_CHAT, say="quiet")
    [asked] = second
    assert asked.fields == {"customer_name": "Maya Patel"}  # chat-a's order is not here
    assert [h.text for h in asked.memory] == [items[2][1]]
    assert "5 Dock Street" in asked.reply
    assert await agent.learnt(asked.extraction) == []  # nothing new in that conversation
    assert all(c["tokens"] <= agent.BUDGET for c in await agent.contexts("chat-b.1"))

    # started again after memory changed, a finished turn gives its first answer: no step runs
    rec = Recorder()
    app.hooks.add(rec)
    message = {"customer_id": "1042", "message": agent.FIRST_CHAT[1], "end": False}
    again = await (await app.start(agent.support_turn, message, id="chat-a.2")).result(TIMEOUT)
    assert again == replace and rec.started == []


async def test_support_agent_a_one_message_conversation_is_learnt_from_too(
    agent: ModuleType,
) -> None:
    """A conversation's first message may be its last: the tool it called sets the session
    fields, and the extraction reads a transcript naming the customer."""
    [only] = await agent.conversation("1042", "chat-c", ["Where is my order A-7781?"], "quiet")
    assert only.tools == ["lookup_order"] and only.extraction is not None
    source = (await agent.app.get_run(only.extraction)).input["source"]
    assert source.startswith("Customer: Maya Patel (customer 1042)\ncustomer: Where is my")
    await agent.learnt(only.extraction)  # it finishes before the app closes
    handle = await agent.app.start(
        agent.support_turn, {"customer_id": "1042", "message": "thanks"}, session="chat-c"
    )
    assert (await handle.result(TIMEOUT)).fields == {
        "customer_name": "Maya Patel",
        "order_id": "A-7781",
        "open_issue": "order A-7781 lost in transit",
    }


async def test_support_agent_unknown_customer_fails_with_a_clear_error(agent: ModuleType) -> None:
    handle = await agent.app.start(
        agent.support_turn, {"customer_id": "9999", "message": "hello"}, session="chat-x"
    )
    with pytest.raises(keel.RunFailed, match=r"no customer '9999'; known: 1042, 1043"):
        await handle.result(TIMEOUT)


def test_support_agent_script_runs(example_env: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "support_agent.py"), "--tag", "t"],
        cwd=example_env,
        env=_env(example_env),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
    ).stdout
    assert "== conversation 2 (session chat-1042-t-2)" in out
    assert "long-term hits: none above 0.25" in out
    assert "duplicate Maya Patel prefers to be contacted by email" in out
    assert "It goes to the office at 5 Dock Street, Leeds" in out
