"""Tool features on Temporal — `keep=`, irreversible tools (intent + reconcile),
`Retry(budget=)`, validation feedback for `local=True` tools — and `ctx.phase`: the
same outcome as on Keel's engine (a real dev server, every workflow task replayed), and
what Keel's store records. An irreversible tool's worker SIGKILLed mid-effect: the
effect is never run twice; `reconcile` decides, or the step fails `OutcomeUnknown`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.backends.temporal import Backend, connect, result, serve, start
from keel.types import StepKind, StepStatus
from tests.apps import temporal_tools_app
from tests.behaviour import tool_scenarios
from tests.behaviour.tool_scenarios import TOOL_SCENARIOS, build
from tests.limits import WAIT
from tests.temporal_run import OnTemporal, executor_fixtures, on_keel

ROOT = Path(__file__).resolve().parents[1]
_ENTRY = [sys.executable, "-m", "keel.backends.temporal", "tests.apps.temporal_tools_app"]


temporal, keel_app = executor_fixtures(build)


def _input(value: dict[str, Any], tag: str) -> dict[str, Any]:
    return {k: (tag if v == "?" else v) for k, v in value.items()}


@pytest.mark.parametrize("name", sorted(TOOL_SCENARIOS))
async def test_same_outcome_on_both_executors(
    name: str, keel_app: Any, temporal: OnTemporal
) -> None:
    s = TOOL_SCENARIOS[name]
    tag = uuid.uuid4().hex[:8]
    on_engine = await on_keel(keel_app, s.workflow, _input(s.input, f"e{tag}"))
    on_temp = await temporal.run(s.workflow, _input(s.input, f"t{tag}"))
    assert on_engine == s.expected
    assert on_temp == on_engine


async def _steps(app: keel.App, rid: str) -> dict[str, Any]:
    return {s.key: s for s in await app.steps(rid)}


async def test_keep_full_output_is_in_keel_store_aside(keel_app: Any, temporal: OnTemporal) -> None:
    """The workflow (and history) get the cut output; the full one is in Keel's store at
    `<key>/full#0`, out of line, with the fields kept: as Keel's engine writes it."""
    t = temporal
    rid = await start(t.app, t.client, t.backend, "kept_order", {"order_id": "o-7"})
    assert (await result(t.app, t.client, rid))["total"] == 250
    handle = await keel_app.start("kept_order", {"order_id": "o-7"})
    await asyncio.wait_for(handle.result(), WAIT)
    for app, run_id in ((t.app, rid), (keel_app, handle.id)):
        steps = await _steps(app, run_id)
        assert steps["fetch_order#0"].output == {"status": "shipped", "total": 250}
        full = steps["fetch_order#0/full#0"]
        assert full.blob is not None and full.kind is StepKind.VALUE
        assert full.input == {"kept": ["status", "total"], "of": 5}
        data = await app.store.load_blob(full.blob)
        assert b'"notes"' in data and b'"o-7"' in data
    history = await t.client.get_workflow_handle(rid).fetch_history()
    assert "xxxxxxxx" not in history.to_json()  # the full record never entered


async def test_irreversible_attempts_are_in_keel_store(temporal: OnTemporal) -> None:
    """An attempt that failed before its effect is retried (its entry says it ended);
    the step is recorded once, done, and its effect ran once per attempt."""
    t = temporal
    token = f"p{uuid.uuid4().hex[:8]}"
    rid = await start(t.app, t.client, t.backend, "pays", {"token": token})
    assert await result(t.app, t.client, rid) == "moved 500 (transfer#0)"
    assert tool_scenarios.effects[token] == 2  # the failed attempt, then the one that did it
    step = (await _steps(t.app, rid))["transfer#0"]
    assert step.status is StepStatus.OK and step.attempts == 2


def _effects(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def _doomed(backend: Backend) -> subprocess.Popen[str]:
    """A worker subprocess that SIGKILLs itself right after its first effect."""
    worker = subprocess.Popen(
        [*_ENTRY, "--backend", backend.url, "--max-cached-workflows", "0"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "KEEL_TEST_DIE": "1"},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None
    assert worker.stdout.readline().startswith("serving ")
    return worker


async def test_a_worker_killed_mid_effect_never_runs_it_twice(
    temporal_address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker SIGKILLs itself right after an irreversible effect, before anything
    records its outcome. Temporal times the attempt out and another worker tries
    again: it finds the intent, and asks `reconcile` (the outside system has the
    effect: its result) or, with no hook, fails the step with OutcomeUnknown. One
    doomed worker per run (each on its own task queue), so each dies in its run."""
    monkeypatch.setenv("KEEL_TEST_DIR", str(tmp_path))
    url = f"sqlite:///{tmp_path}/keel.db"  # the workers' store: the dead ones' and ours
    monkeypatch.setenv("KEEL_STORE", url)
    tag = uuid.uuid4().hex[:8]
    plain_q = Backend(address=temporal_address, task_queue=f"irr-{tag}")
    checked_q = Backend(address=temporal_address, task_queue=f"irr-checked-{tag}")
    app = temporal_tools_app.build(url)
    doomed: list[subprocess.Popen[str]] = []
    try:
        doomed = [_doomed(plain_q), _doomed(checked_q)]
        client = await connect(plain_q, app=app)
        plain = await start(app, client, plain_q, "notify", {"to": "ada"})
        checked = await start(app, client, checked_q, "notify_checked", {"to": "bob"})
        for worker in doomed:
            assert worker.wait(timeout=WAIT) == -9  # it killed itself mid-effect
        async with (
            serve(app, client, plain_q, max_cached_workflows=0),
            serve(app, client, checked_q, max_cached_workflows=0),
        ):
            with pytest.raises(keel.RunFailed) as failed:
                await asyncio.wait_for(result(app, client, plain), WAIT)
            reconciled = await asyncio.wait_for(result(app, client, checked), WAIT)
    finally:
        for worker in doomed:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=WAIT)
    pids = [str(w.pid) for w in doomed]
    effects = sorted(_effects(tmp_path / "effects.log"))
    # each effect ran once, in the worker that died; never again after it
    assert effects == sorted([[f"{plain}:send#0", pids[0]], [f"{checked}:send_checked#0", pids[1]]])
    err = failed.value.error
    assert err is not None and err.type == "OutcomeUnknown" and err.step == "send#0"
    assert f"{plain}:send#0" in err.message  # the idempotency key to look up
    assert reconciled == f"sent by {pids[1]} (reconciled)"
    steps = {s.key: s for s in await app.steps(plain)}
    assert steps["send#0"].status is StepStatus.ERROR
    assert steps["send#0"].error is not None and steps["send#0"].error.type == "OutcomeUnknown"
    done = {s.key: s for s in await app.steps(checked)}
    assert done["send_checked#0"].status is StepStatus.OK
    assert done["send_checked#0"].output == reconciled
    await app.close()
