"""Record/replay cassettes: record a "real provider" once, replay it offline, exactly.

The real provider is LiteLLM's own `openai/gpt-4o-mini` path with `mock_response=`
(and `mock_tool_calls=`), so recording goes through the same code as a hosted call
without a network or a key. Replay goes through the `keel-cassette` custom provider.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.engine.runtime import Settings
from keel.llm import Cassette, Gateway, LLMResponse, ScriptedModel
from keel.llm.gateway import CallContext
from keel.types import RunStatus
from tests.limits import WAIT

RESULT = WAIT  # a bound, never a timing (tests/limits.py)
REAL = "openai/gpt-4o-mini"
ASK = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]
TOOL_CALLS = [
    {
        "id": "call_abc",
        "type": "function",
        "function": {"name": "lookup", "arguments": '{"order_id": 42}'},
    }
]
# What a recorded response must replay as; the call's time is the one thing that may differ.
SAME = {"latency_ms", "started_at"}


@pytest.fixture
async def llm_app(store_url: str) -> AsyncIterator[Callable[..., keel.App]]:
    apps: list[keel.App] = []

    def make(llm: Any) -> keel.App:
        app = keel.App(store_url, settings=Settings(poll_interval=0.02), llm=llm)
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.close()


def gateway(path: Path, mode: str, **kw: Any) -> Gateway:
    return Gateway({"fast": REAL}, cassette=Cassette(path, mode=mode), cache=False, **kw)  # type: ignore[arg-type]


async def test_record_then_replay_gives_equal_responses(tmp_path: Path) -> None:
    path = tmp_path / "cassettes" / "hi.jsonl"
    recorder = gateway(path, "record")
    said = await recorder.complete(ASK, CallContext(), params={"mock_response": "Hi there!"})
    called = await recorder.complete(
        ASK[1:],
        CallContext(),
        params={"mock_response": "", "mock_tool_calls": TOOL_CALLS, "temperature": 0},
    )
    assert said.content == "Hi there!" and said.provider == "openai"
    assert called.tool_calls[0].name == "lookup" and said.cost_usd > 0  # the bundled cost map

    # the file: one JSON line per recorded request
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["model"] for e in lines] == [REAL, REAL]
    assert lines[0]["messages"] == ASK

    # a fresh cassette on the same file, in replay mode, the same requests
    fresh = Cassette(path, mode="replay")
    assert len(fresh) == 2
    player = Gateway({"fast": REAL}, cassette=fresh, cache=False)
    again = await player.complete(ASK, CallContext(), params={"mock_response": "Hi there!"})
    assert again.model_dump(exclude=SAME) == said.model_dump(exclude=SAME)
    again = await player.complete(
        ASK[1:],
        CallContext(),
        params={"mock_response": "", "mock_tool_calls": TOOL_CALLS, "temperature": 0},
    )
    assert again.model_dump(exclude=SAME) == called.model_dump(exclude=SAME)

    # the recording answers, not the mock: without it, or with another one, same reply
    bare = await player.complete(ASK, CallContext())
    assert bare.content == "Hi there!" and bare.usage == said.usage
    other = await player.complete(ASK, CallContext(), params={"mock_response": "changed"})
    assert other.content == "Hi there!"


async def test_a_request_with_no_recording_is_a_cassette_miss(tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl"
    await gateway(path, "record").complete(ASK, CallContext(), params={"mock_response": "hi"})
    backup = ScriptedModel(lambda m: "should not be asked")
    player = Gateway(
        {"fast": REAL, "backup": backup},
        default="fast",
        fallbacks={"fast": ["backup"]},
        cassette=Cassette(path),  # replay is the default mode
        cache=False,
    )
    unrecorded = [{"role": "user", "content": "What is the airspeed of a swallow?"}]
    with pytest.raises(keel.CassetteMiss) as info:
        await player.complete(unrecorded, CallContext())
    err = info.value
    assert str(path) in str(err) and "'openai/gpt-4o-mini'" in str(err)
    assert "What is the airspeed of a swallow?" in str(err)
    assert err.request in str(err) and len(err.request) == 32  # type: ignore[attr-defined]
    assert "KEEL_CASSETTE_MODE=record" in str(err)
    assert not backup.calls and not player._cooling  # a miss is not a provider failure

    # different parameters are a different request
    with pytest.raises(keel.CassetteMiss):
        await player.complete(ASK, CallContext(), params={"temperature": 0.9})


def triage_app(make: Callable[..., keel.App], path: Path, **mock: Any) -> tuple[keel.App, Any]:
    gw = Gateway({"fast": REAL}, cassette=Cassette(path), cache=False, retry=keel.Retry(attempts=1))
    app = make(gw)

    @app.workflow
    async def triage(ctx: keel.Context, ticket: str) -> str:
        return await ctx.llm.text(f"Classify: {ticket}", **mock)

    return app, triage


async def test_a_workflow_replays_from_a_cassette(
    tmp_path: Path, llm_app: Callable[..., keel.App], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "triage.jsonl"
    monkeypatch.setenv("KEEL_CASSETTE_MODE", "record")
    app, triage = triage_app(llm_app, path, mock_response="billing")
    first = await app.start(triage, {"ticket": "refund please"})
    assert await first.result(RESULT) == "billing"

    monkeypatch.setenv("KEEL_CASSETTE_MODE", "replay")
    app2, triage2 = triage_app(llm_app, path)  # replay needs no mock: the cassette answers
    second = await app2.start(triage2, {"ticket": "refund please"})
    assert await second.result(RESULT) == "billing"
    recorded, replayed = [
        LLMResponse.model_validate(
            next(s for s in await a.steps(h.id) if s.kind.value == "llm").output
        )
        for a, h in ((app, first), (app2, second))
    ]
    assert replayed.content == recorded.content and replayed.usage == recorded.usage
    assert replayed.cost_usd == recorded.cost_usd and replayed.model == REAL

    # a ticket never recorded fails the run with the miss, not retried
    third = await app2.start(triage2, {"ticket": "my cat is on fire"})
    info = await third.settle(RESULT)
    assert info.status is RunStatus.FAILED and info.error is not None
    assert info.error.type == "CassetteMiss" and "my cat is on fire" in info.error.message
    (step,) = [s for s in await app2.steps(third.id) if s.kind.value == "llm"]
    assert step.attempts == 1


async def test_cassette_configuration_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(keel.ConfigError, match="does not exist; record it first"):
        Cassette(tmp_path / "missing.jsonl")
    with pytest.raises(keel.ConfigError, match="'replay' or 'record'"):
        Cassette(tmp_path / "x.jsonl", mode="rewind")  # type: ignore[arg-type]
    monkeypatch.setenv("KEEL_CASSETTE_MODE", "record")
    assert Cassette(tmp_path / "new.jsonl").mode == "record"
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"key": "a", "response": {}}\nnot json\n')
    with pytest.raises(keel.ConfigError, match=r"broken\.jsonl:2: not a cassette entry"):
        Cassette(broken)


async def test_scripted_models_are_never_recorded(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    scripted = ScriptedModel(lambda m: "local")
    gw = Gateway({"s": scripted}, cassette=Cassette(path, mode="record"), cache=False)
    assert (await gw.complete(ASK, CallContext())).content == "local"
    assert not path.exists()
    # ... and replay straight from the script, with no recording needed
    path.write_text("")
    gw = Gateway({"s": scripted}, cassette=Cassette(path, mode="replay"), cache=False)
    assert (await gw.complete(ASK, CallContext())).content == "local"
