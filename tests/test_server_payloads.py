"""Who sees payloads: a viewer never receives a planted secret from any API route or
console page (run input and result, state, step inputs and outputs, approval arguments
and context, escalation packets, model prompts and replies, spans, decisions), while a
reviewer sees the proposed arguments as they are. `raw_payloads` changes who is who."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

import keel
from keel.engine.runtime import Settings
from keel.hitl import Approval, Sample
from keel.llm import Gateway, Reply, ScriptedModel
from keel.server.access import endpoints
from keel.server.app import create_app
from keel.server.auth import add_user
from keel.server.paths import url_id
from tests.limits import WAIT
from tests.services.pages import csrf_of, sign_in

SETTLE = WAIT
# Planted where the App's redactor recognises a secret (what it cannot recognise, such as
# a password in prose, a viewer sees: configure the redactor for your own secrets).
PASSWORD = "Hunter2-Secret!"  # under secret field names only: password, token
KEY = "sk-live0123456789abcdefXYZ"  # an API key: masked wherever it appears in text
SECRETS = (PASSWORD, KEY)


class Creds(BaseModel):
    token: str = ""
    note: str = ""


class Label(BaseModel):
    category: str
    note: str


def script(messages: list[dict[str, Any]]) -> Reply:
    prompt = str(messages[-1].get("content") or "")
    if prompt.startswith("Label"):  # a low-confidence structured output carrying the key
        return Reply(content=json.dumps({"category": "ops", "note": f"used {KEY}"}),
                     logprobs=[-0.9, -1.4, -1.1])
    return Reply(content=f"Deployed with {KEY}.")


class Env:
    def __init__(self, app: keel.App) -> None:
        self.app = app
        self.tokens: dict[str, str] = {}
        self.wf: dict[str, Any] = {}

    def server(self, **kw: Any) -> Any:
        return create_app(self.app, secure_cookies=False, **kw)

    @asynccontextmanager
    async def clients(
        self, server: Any, user: str
    ) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
        """(API client with the user's token, console client signed in as the user)."""
        def make() -> httpx.AsyncClient:
            return httpx.AsyncClient(transport=httpx.ASGITransport(app=server),
                                     base_url="http://keel.test")
        async with make() as api, make() as web:
            api.headers["Authorization"] = f"Bearer {self.tokens[user]}"
            await sign_in(web, self.tokens[user])
            yield api, web


@pytest.fixture
async def env(store_url: str) -> AsyncIterator[Env]:
    app = keel.App(store_url, settings=Settings(poll_interval=0.02),
                   llm=Gateway({"m": ScriptedModel(script)}, retry=keel.Retry(attempts=1)))

    @app.tool(irreversible=True, approval=Approval(
        queue="ops", reason="pushes to production",
        context=lambda s: {"token": s.token, "note": s.note}))
    async def push(service: str, api_key: str) -> str:
        return f"pushed {service}"

    @app.workflow(state=Creds)
    async def deploy(ctx: keel.Context, service: str, password: str) -> dict[str, Any]:
        ctx.state.token = password
        ctx.state.note = f"key {KEY}"
        summary = await ctx.llm.text(f"Summarise the deploy of {service} with key {KEY}",
                                     name="summary")
        await ctx.call(push, service=service, api_key=KEY)
        return {"password": password, "summary": summary}

    @app.tool(retry=keel.Retry(attempts=1), fallback=keel.Fallback.human(queue="ops"))
    async def vault(password: str) -> str:
        raise RuntimeError(f"vault refused {KEY}")

    @app.workflow
    async def unlock(ctx: keel.Context, password: str) -> str:
        return await ctx.call(vault, password=password)

    @app.workflow
    async def label(ctx: keel.Context, text: str) -> dict[str, Any]:
        got = await ctx.llm.structured(Label, f"Label {text} {KEY}", min_confidence=0.9,
                                       review_queue="ops")
        assert isinstance(got, Label)
        return got.model_dump()

    @app.workflow(sample=Sample(rate=1.0, queue="ops"))
    async def graded(ctx: keel.Context, password: str) -> dict[str, str]:
        return {"password": password, "echo": KEY}

    e = Env(app)
    e.wf = {"deploy": deploy, "unlock": unlock, "label": label, "graded": graded}
    for name, role in (("vera", "viewer"), ("rita", "reviewer"), ("ada", "admin")):
        e.tokens[name] = await add_user(app.store, name, role, ["ops"])
    for wf, args, rid in (("deploy", {"service": "api", "password": PASSWORD}, "d1"),
                          ("deploy", {"service": "web", "password": PASSWORD}, "d2"),
                          ("unlock", {"password": PASSWORD}, "u1"),
                          ("label", {"text": "an outage"}, "l1"),
                          ("graded", {"password": PASSWORD}, "g1")):
        await (await app.start(e.wf[wf], args, id=rid)).settle(SETTLE)
    # decided ones too: an approval, a correction carrying the key, an escalation
    await app.approvals.approve("d2:approval:push#0", by="rita")
    [low] = [r for r in await app.approvals.list() if r.run_id == "l1"]
    await app.approvals.correct(low.id, {"category": "ops", "note": f"fixed {KEY}"}, by="rita")
    yield e
    await app.close()


async def _every_get(env: Env, server: Any, user: str) -> dict[str, str]:
    """Every GET route of `server` (enumerated, every id filled in) as `user`: path -> body."""
    ids = {
        "run_id": [r.id for r in await env.app.list_runs()],
        "escalation_id": [e.id for e in await env.app.escalations.list("all")],
        "/approvals/": [r.id for r in await env.app.approvals.list(status="all")],
        "/reviews/": [r.id for r in await env.app.reviews.list("all")],
    }
    bodies: dict[str, str] = {}
    async with env.clients(server, user) as (api, web):
        for e in endpoints(server):
            if e.method != "GET" or e.path.startswith("/api/v1/users"):
                continue
            found = re.search(r"\{(\w+)\}", e.path)
            if found is None:
                fills = [e.path]
            else:
                key = found.group(1)
                if key == "review_id":
                    key = "/approvals/" if "/approvals/" in e.path else "/reviews/"
                fills = [e.path.replace(found.group(0), url_id(i)) for i in ids[key]]
                assert fills, e
            for path in fills:
                for query in ("", "?status=all") if e.path.endswith(
                        ("/approvals", "/escalations", "/reviews")) else ("",):
                    client = api if path.startswith("/api/") else web
                    r = await client.get(path + query)
                    assert r.status_code in (200, 303, 403), (path, r.status_code, r.text[:300])
                    bodies[path + query] = r.text
    assert len(bodies) >= 40
    return bodies


async def test_a_viewer_never_receives_a_planted_secret(env: Env) -> None:
    server = env.server()
    seen = await _every_get(env, server, "vera")
    leaks = {f"{path} {s}": _around(body, s) for path, body in seen.items() for s in SECRETS
             if s in body}
    assert not leaks, "\n".join(f"{k}: {v}" for k, v in leaks.items())
    assert "[REDACTED]" in seen["/api/v1/runs/d1"] and "[REDACTED]" in seen["/runs/d1"]
    # not a vacuous check: a reviewer, through the same routes, gets them
    raw = await _every_get(env, server, "rita")
    assert any(PASSWORD in b for b in raw.values()) and any(KEY in b for b in raw.values())


async def test_a_reviewer_sees_the_proposed_arguments_raw_and_decides_on_them(env: Env) -> None:
    async with env.clients(env.server(), "rita") as (api, web):
        got = (await api.get(f"/api/v1/approvals/{url_id('d1:approval:push#0')}")).json()
        assert got["args"] == {"service": "api", "api_key": KEY}
        assert got["request"]["context"] == {"token": PASSWORD, "note": f"key {KEY}"}
        page = await web.get(f"/approvals/{url_id('d1:approval:push#0')}")
        assert f'value="{KEY}"' in page.text and 'id="arg-api_key"' in page.text
        assert 'id="redacted-note"' not in page.text
    async with env.clients(env.server(), "vera") as (viewer_api, viewer_web):
        got = (await viewer_api.get(f"/api/v1/approvals/{url_id('d1:approval:push#0')}")).json()
        assert got["args"] == {"service": "api", "api_key": "[REDACTED]"}
        page = await viewer_web.get(f"/approvals/{url_id('d1:approval:push#0')}")
        assert 'id="redacted-note"' in page.text


async def test_raw_payloads_decides_which_roles_see_them_raw(env: Env) -> None:
    aid = url_id("d1:approval:push#0")
    everyone = env.server(raw_payloads="viewer,reviewer,admin")
    async with env.clients(everyone, "vera") as (api, web):
        assert (await api.get(f"/api/v1/approvals/{aid}")).json()["args"]["api_key"] == KEY
    # only admins: reviewers decide as proposed, without seeing or editing the values
    admins = env.server(raw_payloads="admin")
    async with env.clients(admins, "rita") as (api, web):
        assert (await api.get(f"/api/v1/approvals/{aid}")).json()["args"]["api_key"] != KEY
        edit = await api.post(f"/api/v1/approvals/{aid}/edit",
                              json={"args": {"service": "api", "api_key": "[REDACTED]"}})
        assert edit.status_code == 403 and "cannot edit or correct" in edit.json()["detail"]
        page = await web.get(f"/approvals/{aid}")
        assert KEY not in page.text and 'id="arg-api_key"' not in page.text
        assert 'id="approve"' in page.text  # as proposed
        r = await web.post(f"/approvals/{aid}/approve",
                           data={"csrf": csrf_of(page.text), "arg.api_key": "[REDACTED]"})
        assert r.status_code == 303
    done = await env.app.approvals.get("d1:approval:push#0")
    assert done.status == "approved" and done.decision is not None
    assert done.decision["args"] == {"service": "api", "api_key": KEY}  # unchanged
    assert await env.app.handle("d1").result(SETTLE) == {
        "password": PASSWORD, "summary": f"Deployed with {KEY}."}


async def test_a_reviewer_who_sees_outputs_masked_cannot_correct_them(env: Env) -> None:
    await (await env.app.start(env.wf["label"], {"text": "x"}, id="l2")).settle(SETTLE)
    [low] = [r for r in await env.app.approvals.list() if r.run_id == "l2"]
    async with env.clients(env.server(raw_payloads="admin"), "rita") as (_, web):
        page = await web.get(f"/approvals/{url_id(low.id)}")
        assert 'id="confirm"' in page.text and 'id="correct"' not in page.text
        assert KEY not in page.text
        r = await web.post(f"/approvals/{url_id(low.id)}/correct",
                           data={"csrf": csrf_of(page.text), "output": "{}"})
        assert r.status_code == 403 and "cannot edit or correct" in r.text
    assert (await env.app.approvals.get(low.id)).status == "pending"


def _around(body: str, secret: str) -> str:
    at = body.index(secret)
    return body[max(at - 120, 0): at + len(secret) + 20].replace("\n", " ")
