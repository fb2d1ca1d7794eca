"""The bundled examples run unchanged on Temporal: each example module is imported as it
is (its App on this test's store, the offline model), hosted by a Temporal worker, and
its workflows give the outcome they give on Keel's engine (account_sync:
tests/test_temporal_backend.py)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import keel
from keel.backends.temporal import result, signal, start
from tests.backends import fresh_url
from tests.limits import WAIT
from tests.temporal_run import OnTemporal, on_temporal

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def example_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KEEL_MODEL", raising=False)
    monkeypatch.delenv("KEEL_BACKEND", raising=False)
    monkeypatch.setenv("KEEL_STORE", fresh_url(tmp_path))
    monkeypatch.setenv("KEEL_EXAMPLE_OUTBOX", str(tmp_path / "outbox"))
    monkeypatch.setenv("KEEL_EXAMPLE_LATENCY_SCALE", "0")
    return tmp_path


def _import(stem: str) -> ModuleType:
    """A fresh import of examples/<stem>.py (its module-level App a new one)."""
    name = f"_keel_temporal_example_{stem}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{stem}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def loaded(example_env: Path) -> AsyncIterator[Callable[[str], ModuleType]]:
    """`loaded("oracle")`: the example on Keel's engine (to compare with)."""
    modules: list[ModuleType] = []

    def load(stem: str) -> ModuleType:
        modules.append(_import(stem))
        return modules[-1]

    yield load
    for module in modules:
        await module.app.close()
        sys.modules.pop(module.__name__, None)


@pytest.fixture
async def hosted(example_env: Path, temporal_address: str) -> AsyncIterator[Callable[[str], Any]]:
    """`await hosted("oracle")`: the example, its App served on Temporal and pointed at it
    (`app.backend`: what KEEL_BACKEND sets), so decisions reach its runs there."""
    stack: list[tuple[ModuleType, Any]] = []

    async def host(stem: str) -> tuple[ModuleType, OnTemporal]:
        module = _import(stem)
        serving = on_temporal(module.app, temporal_address)
        t = await serving.__aenter__()
        module.app.backend = t.backend
        stack.append((module, serving))
        return module, t

    yield host
    for module, serving in reversed(stack):
        await serving.__aexit__(None, None, None)
        await module.app.close()
        sys.modules.pop(module.__name__, None)


async def _until(check: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not check():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_oracle_asks_once_and_books_on_the_answer(hosted: Any) -> None:
    oracle, t = await hosted("oracle")
    rid = await start(
        oracle.app,
        t.client,
        t.backend,
        "plan_delivery",
        {"order_id": "ord-7", "city": "Leeds"},
        run_id=f"ord-{uuid.uuid4().hex[:6]}",
    )
    inbox = oracle.inbox()
    await _until(lambda: inbox.exists() and inbox.read_text().strip() != "", "the question")
    (asked,) = [json.loads(line) for line in inbox.read_text().splitlines()]
    assert asked["id"] == f"{rid}:oracle#0"
    await signal(t.client, rid, asked["signal"], "Yes, heavy rain")
    out = await asyncio.wait_for(result(oracle.app, t.client, rid), WAIT)
    assert out == {
        "order_id": "ord-7",
        "city": "Leeds",
        "forecast": "Yes, heavy rain",
        "booking": "covered-van/ord-7",
    }


async def test_drift_classifier_runs_are_observed_by_its_monitors(hosted: Any) -> None:
    drift, t = await hosted("drift_classifier")
    runs = []
    for i in range(3):
        rid = await start(drift.app, t.client, t.backend, "classify_ticket", {"text": f"t {i}"})
        out = await asyncio.wait_for(result(drift.app, t.client, rid), WAIT)
        assert out["category"] in ("billing", "outage")
        runs.append((rid, out["category"]))
    # each run's end, learnt from Temporal, was observed by the workflow's monitors
    key = keel.drift.Distribution("category").key
    values = await drift.app.store.drift_values("classify_ticket", key, 10)
    assert sorted((v.run_id, v.label) for v in values) == sorted(runs)


async def test_support_agent_conversation_as_on_the_engine(hosted: Any, loaded: Any) -> None:
    agent, t = await hosted("support_agent")
    engine = loaded("support_agent")
    customer = "1042"
    seeded = await start(
        agent.app,
        t.client,
        t.backend,
        "seed_customer",
        {"customer_id": customer},
        run_id=f"seed-{customer}",
    )
    assert len(await asyncio.wait_for(result(agent.app, t.client, seeded), WAIT)) > 0
    session = f"chat-{uuid.uuid4().hex[:6]}"
    messages = agent.FIRST_CHAT[:2]
    replies = []
    for n, message in enumerate(messages):
        rid = await start(
            agent.app,
            t.client,
            t.backend,
            "support_turn",
            {"customer_id": customer, "message": message},
            session=session,
            run_id=f"{session}.{n + 1}",
        )
        replies.append(await asyncio.wait_for(result(agent.app, t.client, rid), WAIT))
    # the same conversation on Keel's engine (the memories seeded above are shared)
    engine_session = f"e{session}"
    for n, message in enumerate(messages):
        handle = await engine.app.start(
            "support_turn",
            {"customer_id": customer, "message": message},
            session=engine_session,
            id=f"{engine_session}.{n + 1}",
        )
        on_engine = await handle.result(WAIT)
        got = replies[n]
        # two imports of the example: compare the replies as data, not as two classes
        keep = {"reply", "fields", "tools", "memory"}
        assert got.model_dump(include=keep) == on_engine.model_dump(include=keep)
    assert replies[0].tools == ["lookup_order"]
    # the session the Temporal runs share holds what the conversation established
    state = await agent.app.session_store.session_get(session, "order_id")
    assert state is not None and json.loads(state.value) == "A-7781"


async def test_doc_summary_fan_out_with_a_phase_as_on_the_engine(hosted: Any, loaded: Any) -> None:
    docs, t = await hosted("doc_summary")
    engine = loaded("doc_summary")
    good = docs.synthetic_documents()[:8]
    broken = good[0].model_copy(update={"id": "X-1", "text": "Revenue: unknown"})
    given = {"docs": [d.model_dump() for d in [*good, broken]], "require_fraction": 0.75}
    on_engine = await (await engine.app.start("summarize_docs", given)).result(WAIT)
    rid = await start(docs.app, t.client, t.backend, "summarize_docs", given)
    report = await asyncio.wait_for(result(docs.app, t.client, rid), WAIT)
    assert (report.documents, report.succeeded) == (9, 8)
    assert [(f.index, f.doc_id) for f in report.failed] == [(8, "X-1")]
    assert report.model_dump(exclude={"generated_at"}) == on_engine.model_dump(
        exclude={"generated_at"}
    )


async def test_refunds_wait_for_a_person_whose_edit_is_refunded_once(hosted: Any) -> None:
    refunds, t = await hosted("refunds")
    app = refunds.app
    small = await start(
        app, t.client, t.backend, "refund", {"charge_id": "ch_1043", "reason": "late"}
    )
    assert (await asyncio.wait_for(result(app, t.client, small), WAIT))["amount"] == 12.5
    rid = await start(app, t.client, t.backend, "refund", {"charge_id": "ch_1042", "reason": "x"})
    await _until_async(lambda: app.approvals.list(queue="payments"), "the approval request")
    [req] = await app.approvals.list(queue="payments")
    assert req.tool == "issue_refund" and req.args == {"charge_id": "ch_1042", "amount": 80.0}
    assert not refunds.ledger().read_text().count("ch_1042")  # nothing before a person
    with pytest.raises(keel.InputError, match="amount"):
        await app.approvals.edit(req.id, {"charge_id": "ch_1042", "amount": "all"}, by="dana")
    await app.approvals.edit(req.id, {"charge_id": "ch_1042", "amount": 40.0}, by="dana")
    out = await asyncio.wait_for(result(app, t.client, rid), WAIT)
    assert out["status"] == "refunded" and out["amount"] == 40.0
    assert refunds.ledger().read_text().count("ch_1042") == 1
    actions = [a["action"] for a in await app.approvals.audit(req.id)]
    assert actions == ["requested", "edited"]


async def test_support_triage_approved_by_signal_sends_once(hosted: Any) -> None:
    triage, t = await hosted("support_triage")
    ticket = {
        "id": "T-1042",
        "account_id": "acct_1003",
        "subject": "Charged twice for the March invoice",
        "body": "Our credit card was charged twice for the March invoice. Please refund it.",
    }
    rid = await start(
        triage.app,
        t.client,
        t.backend,
        "triage",
        {"ticket": ticket},
        run_id=f"t-{uuid.uuid4().hex[:6]}",
    )
    await signal(t.client, rid, "approval", {"approved": True, "reviewer": "dana"})
    outcome = await asyncio.wait_for(result(triage.app, t.client, rid), WAIT)
    assert outcome.status == "sent" and outcome.reviewer == "dana"
    [sent] = triage.read_outbox()
    assert sent["idempotency_key"] == f"{rid}:send_reply#0"
    assert sent["body"] == outcome.body


async def _until_async(read: Callable[[], Any], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not await read():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
