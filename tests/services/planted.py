"""A store full of planted secrets, and a console over it, for the tests that prove no
secret leaks (tests/test_server_payloads.py, tests/test_security_planted.py).

Secrets are planted where the App's redactor recognises them (what it cannot recognise,
such as a password in prose, a viewer sees: configure the redactor for your own):
run input, state, a tool's arguments and error, an approval's arguments and context, a
decided correction, an escalation packet, model prompts and replies, a sampled run.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from pydantic import BaseModel

import keel
from keel.engine.runtime import Settings
from keel.hitl import Approval, Sample
from keel.llm import Gateway, Reply, ScriptedModel
from keel.server.access import endpoints
from keel.server.app import create_app
from keel.server.auth import add_user
from keel.server.paths import url_id
from keel.store import EvalCaseResult, EvalResult
from tests.limits import WAIT
from tests.memory_embedders import HashedWords
from tests.services.pages import sign_in

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


@asynccontextmanager
async def planted(store_url: str, **app_options: Any) -> AsyncIterator[Env]:
    """An App on `store_url` whose runs hold the planted secrets, users vera (viewer),
    rita (reviewer) and ada (admin); closed on exit."""
    app_options.setdefault("embedder", HashedWords())  # plumbing: no retrieval claims
    app = keel.App(store_url, settings=Settings(poll_interval=0.02),
                   llm=Gateway({"m": ScriptedModel(script)}, retry=keel.Retry(attempts=1)),
                   **app_options)

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

    @app.tool
    async def report(service: str) -> dict[str, str]:  # over 256 KiB: stored out of line
        return {"service": service, "api_key": KEY, "log": "x" * (300 * 1024)}

    @app.workflow
    async def handover(ctx: keel.Context, service: str) -> int:
        big = await ctx.call(report, service)
        creds = await ctx.wait_for("creds")  # a signal whose payload holds the password
        return len(big["log"]) + len(creds["password"])

    e = Env(app)
    e.wf = {"deploy": deploy, "unlock": unlock, "label": label, "graded": graded,
            "handover": handover}
    for name, role in (("vera", "viewer"), ("rita", "reviewer"), ("ada", "admin")):
        e.tokens[name] = await add_user(app.store, name, role, ["ops"])
    for wf, args, rid in (("deploy", {"service": "api", "password": PASSWORD}, "d1"),
                          ("deploy", {"service": "web", "password": PASSWORD}, "d2"),
                          ("unlock", {"password": PASSWORD}, "u1"),
                          ("label", {"text": "an outage"}, "l1"),
                          ("graded", {"password": PASSWORD}, "g1"),
                          ("handover", {"service": "db"}, "h1")):
        await (await app.start(e.wf[wf], args, id=rid)).settle(SETTLE)
    await app.signal("h1", "creds", {"password": PASSWORD})
    await app.handle("h1").result(SETTLE)
    # decided ones too: an approval, a correction carrying the key, an escalation
    await app.approvals.approve("d2:approval:push#0", by="rita")
    [low] = [r for r in await app.approvals.list() if r.run_id == "l1"]
    await app.approvals.correct(low.id, {"category": "ops", "note": f"fixed {KEY}"}, by="rita")
    # a long-term memory, so the memory pages are read too (no secret: memory text is
    # stored in clear, to be searchable; docs/encryption.md)
    await app.memory.add("the ops runbook lives in the wiki", namespace="ops")
    # and an eval result whose case is a planted run, so the Evals pages are read too
    # (no secret: eval results are kept in clear; docs/encryption.md)
    now = await app.store.now()
    await app.store.save_eval(
        EvalResult("ev1", "graded-suite", now, now, "pass", {"means": {"fields": 1.0}}),
        [EvalCaseResult("ev1", "g1", 0, "g1", True, {"fields": {"value": 1.0, "passed": True}})],
    )
    try:
        yield e
    finally:
        await app.close()


async def every_get(env: Env, server: Any, user: str) -> dict[str, str]:
    """Every GET route of `server` (enumerated, every id filled in) as `user`: path -> body."""
    ids = {
        "run_id": [r.id for r in await env.app.list_runs()],
        "escalation_id": [e.id for e in await env.app.escalations.list("all")],
        "/approvals/": [r.id for r in await env.app.approvals.list(status="all")],
        "/reviews/": [r.id for r in await env.app.reviews.list("all")],
        "namespace": [n.namespace for n in await env.app.memory.namespaces()],
        "eval_id": [e.id for e in await env.app.store.list_evals()],
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
                queries = ("", "?status=all") if e.path.endswith(
                    ("/approvals", "/escalations", "/reviews")) else ("",)
                if e.path.endswith("/search"):  # a memory search: its query is required
                    queries = ("?q=runbook",)
                for query in queries:
                    client = api if path.startswith("/api/") else web
                    r = await client.get(path + query)
                    assert r.status_code in (200, 303, 403), (path, r.status_code, r.text[:300])
                    bodies[path + query] = r.text
    assert len(bodies) >= 40
    return bodies


def around(body: str, secret: str) -> str:
    at = body.index(secret)
    return body[max(at - 120, 0): at + len(secret) + 20].replace("\n", " ")
