"""The gateway's cross-process pieces on a real Redis: shared rate limits and cache."""

from __future__ import annotations

from pathlib import Path

import pytest

import keel
from keel.llm import Gateway, ModelSpec, ScriptedModel
from keel.llm.gateway import CallContext
from keel.llm.ratelimit import RateLimiter
from tests.backends import fresh_url
from tests.limits import WAIT


async def test_cache_is_shared_through_redis(redis_url: str, tmp_path: Path) -> None:
    model = ScriptedModel(lambda messages: "cached answer")
    # cache=True: a scripted model is cached only when asked
    one = Gateway(models={"m": model}, redis_url=redis_url, cache=True)
    two = Gateway(models={"m": model}, redis_url=redis_url, cache=True)  # another process
    msgs = [{"role": "user", "content": f"hello {tmp_path.name}"}]
    first = await one.complete(msgs, CallContext(workflow="wf"))
    second = await two.complete(msgs, CallContext(workflow="wf"))
    assert not first.cache_hit and second.cache_hit
    assert second.content == "cached answer" and second.cost_usd == 0.0
    assert len(model.calls) == 1
    await one.close()
    await two.close()


async def test_rate_limit_window_is_shared_across_limiters(redis_url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    key = "shared-model-test"
    a = RateLimiter(rpm=3, redis=client, key=key)
    b = RateLimiter(rpm=3, redis=client, key=key)
    for lim in (a, b, a):
        assert await lim.acquire(1) == 0.0  # three requests fit in this minute's window
    window_reqs = await client.get(f"keel:rl:{key}:r:{int(__import__('time').time() // 60)}")
    assert int(window_reqs) == 3
    await client.aclose()


async def test_gateway_with_redis_runs_a_workflow(redis_url: str, tmp_path: Path) -> None:
    model = ScriptedModel(lambda messages: "ok")
    app = keel.App(
        fresh_url(tmp_path),
        llm=Gateway(models={"m": ModelSpec(model, rpm=1000)}, redis_url=redis_url),
    )

    @app.workflow()
    async def ask(ctx: keel.Context) -> str:
        return str(await ctx.llm.text("ping"))

    assert await (await app.start(ask)).result(WAIT) == "ok"
    await app.close()


def test_missing_redis_is_explained(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tests.services import redis_server

    monkeypatch.setattr(redis_server.shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with (
        pytest.raises(pytest.fail.Exception, match="apt-get install redis-server"),
        redis_server.redis_server(tmp_path),
    ):
        pass
