"""`ctx.phase(on_fail="escalate")` on Temporal (a real dev server, every task replayed):
the escalation Keel's engine opens (id, packet, queue), decided through `app.escalations`;
a resolution that does not fit the state refused to the caller; one that fails the
checkpoint opening round `~2`; a rejection failing the phase. The outcomes are compared
with Keel's engine in tests/test_temporal_people.py (tests/behaviour/people_scenarios.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

import keel
from keel.backends.temporal import Backend, connect, result, serve, start
from keel.backends.temporal.decisions import deliver
from keel.backends.temporal.workflow import STATE_QUERY
from keel.types import Escalation, StepRecord
from tests.behaviour.people_scenarios import Figures, build, escalated
from tests.limits import WAIT


class _Env:
    def __init__(self, app: keel.App, client: Any, backend: Backend) -> None:
        self.app, self.client, self.backend = app, client, backend

    async def start(self, workflow: str) -> str:
        rid = f"{workflow}-{uuid.uuid4().hex[:8]}"
        given = {"doc": "d-1", "total": 4}
        return await start(self.app, self.client, self.backend, workflow, given, run_id=rid)

    async def result(self, rid: str) -> Any:
        return await asyncio.wait_for(result(self.app, self.client, rid), WAIT)

    async def steps(self, rid: str) -> dict[str, StepRecord]:
        return {s.key: s for s in await self.app.steps(rid)}

    async def opened(self, esc_id: str) -> Escalation:
        async with asyncio.timeout(WAIT):
            while (found := await self.app.store.get_escalation(esc_id)) is None:
                await asyncio.sleep(0.05)
        return found


@pytest.fixture
async def env(temporal_address: str, store_url: str) -> AsyncIterator[_Env]:
    backend = Backend(address=temporal_address, task_queue=f"ph-{uuid.uuid4().hex[:12]}")
    app = build(store_url, backend=backend)
    client = await connect(backend, app=app)
    async with serve(app, client, backend, max_cached_workflows=0):
        yield _Env(app, client, backend)
    await app.close()


async def test_an_escalated_phase_resolved_with_edits_passes_with_the_edited_state(
    env: _Env,
) -> None:
    rid = await env.start("extract")
    esc = await escalated(env.app, rid)
    assert esc.id == f"{rid}:phase:extract#0"  # the id Keel's engine gives it
    assert (esc.kind, esc.queue, esc.step) == ("phase", "finance", "phase:extract#0")
    p = esc.packet
    assert (p.workflow, p.phase, p.step) == ("extract", "extract", "phase:extract#0")
    assert p.messages == ["figures sum to 3, not the stated total 4"]
    assert p.reason == (
        "phase 'extract' failed its checkpoint after 1 attempt(s): "
        "figures sum to 3, not the stated total 4"
    )
    assert p.state == {"figures": [1, 2], "total": 4}
    assert p.result_schema is not None
    assert p.result_schema["properties"] == Figures.model_json_schema()["properties"]
    assert p.checks == ["tests.behaviour.people_scenarios:adds_up"]
    assert [j["key"] for j in p.journal] == ["phase:extract#0/0/figures_of#0"]
    assert p.journal[0]["output"] == "[1,2]"
    assert (await env.steps(rid))["phase:extract#0/escalation"].output == esc.id

    await env.app.escalations.resolve(esc.id, result={"figures": [1, 3]}, by="ana")
    assert await env.result(rid) == {"figures": [1, 3], "total": 4}
    steps = await env.steps(rid)
    phase = steps["phase:extract#0"]
    assert (phase.status.value, phase.fallback) == ("ok", "human")
    assert steps["phase:extract#0/resolution"].output["by"] == "ana"
    assert steps["phase:extract#0/verdict"].output == []  # the checkpoint on the edits
    decided = await env.app.escalations.get(esc.id)
    assert (decided.status, decided.resolved_by) == ("resolved", "ana")


async def test_a_resolution_that_does_not_fit_the_state_is_refused_and_the_run_waits(
    env: _Env,
) -> None:
    rid = await env.start("extract")
    esc = await escalated(env.app, rid)
    with pytest.raises(keel.InputError, match="figures"):  # Keel's own check, first
        await env.app.escalations.resolve(esc.id, result={"figures": "many"}, by="ana")
    # sent straight to the run: its update validator refuses it, nothing enters history
    bad = {"status": "resolved", "result": {"drfat": [1, 3]}, "by": "mallory"}
    with pytest.raises(keel.InputError, match="drfat: unknown field") as refused:
        await deliver(env.app, rid, esc.id, bad)
    assert refused.value.data["problems"] == ["drfat: unknown field (known: figures, total)"]
    with pytest.raises(keel.InputError, match="JSON object of state fields"):
        await deliver(env.app, rid, esc.id, {**bad, "result": [1, 3]})
    assert (await env.app.escalations.get(esc.id)).status == "open"
    handle = env.client.get_workflow_handle(rid)
    assert (await handle.query(STATE_QUERY))["state"] == {"figures": [1, 2], "total": 4}

    await env.app.escalations.resolve(esc.id, result={"figures": [2, 2]}, by="ana")
    assert await env.result(rid) == {"figures": [2, 2], "total": 4}


async def test_a_resolution_failing_the_checkpoint_opens_round_2(env: _Env) -> None:
    rid = await env.start("extract_loosely")
    first = await escalated(env.app, rid)
    # the lambda cannot run where this is entered: accepted here, checked by the run
    await env.app.escalations.resolve(first.id, result={"figures": [1, 2, 2]}, by="ana")
    second = await env.opened(f"{first.id}~2")
    assert (second.step, second.queue, second.status) == ("phase:extract#0", "finance", "open")
    assert second.packet.reason == (
        f"phase 'extract': the resolution of escalation {first.id} by ana failed the "
        "checkpoint: sum 5"
    )
    assert second.packet.messages == ["sum 5"]
    assert second.packet.state == {"figures": [1, 2], "total": 4}  # the edits not applied
    assert (await env.app.escalations.get(first.id)).status == "resolved"
    with pytest.raises(keel.Conflict, match="a decision is final"):
        await env.app.escalations.resolve(first.id, result={"figures": [3, 1]}, by="ana")

    await env.app.escalations.resolve(second.id, result={"figures": [3, 1]}, by="ana")
    assert await env.result(rid) == {"figures": [3, 1], "total": 4}
    steps = await env.steps(rid)
    assert steps["phase:extract#0/verdict"].output == ["sum 5"]
    assert steps["phase:extract#0/verdict~2"].output == []
    assert {"phase:extract#0/escalation~2", "phase:extract#0/resolution~2"} <= set(steps)
    assert (steps["phase:extract#0"].status.value, steps["phase:extract#0"].fallback) == (
        "ok",
        "human",
    )


async def test_a_rejected_phase_escalation_fails_the_run(env: _Env) -> None:
    rid = await env.start("extract")
    esc = await escalated(env.app, rid)
    await env.app.escalations.reject(esc.id, "source document is corrupt", by="ana")
    with pytest.raises(keel.RunFailed) as failed:
        await env.result(rid)
    err = failed.value.error
    assert err is not None and err.type == "EscalationRejected"
    assert err.message == (
        f"phase 'extract' escalation {esc.id} was rejected by ana: source document is corrupt"
    )
    assert (err.step, err.fallback) == ("phase:extract#0", "human")
    phase = (await env.steps(rid))["phase:extract#0"]
    assert (phase.status.value, phase.fallback) == ("error", "human")
    assert phase.error is not None and phase.error.type == "EscalationRejected"
