"""Who sees payloads: a viewer never receives a planted secret from any API route or
console page (run input and result, state, step inputs and outputs, approval arguments
and context, escalation packets, model prompts and replies, spans, decisions), while a
reviewer sees the proposed arguments as they are. `raw_payloads` changes who is who."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from keel.server.paths import url_id
from tests.services.pages import csrf_of
from tests.services.planted import KEY, PASSWORD, SECRETS, SETTLE, Env, around, every_get, planted


@pytest.fixture
async def env(store_url: str) -> AsyncIterator[Env]:
    async with planted(store_url) as e:
        yield e


async def test_a_viewer_never_receives_a_planted_secret(env: Env) -> None:
    server = env.server()
    seen = await every_get(env, server, "vera")
    leaks = {f"{path} {s}": around(body, s) for path, body in seen.items() for s in SECRETS
             if s in body}
    assert not leaks, "\n".join(f"{k}: {v}" for k, v in leaks.items())
    assert "[REDACTED]" in seen["/api/v1/runs/d1"] and "[REDACTED]" in seen["/runs/d1"]
    # not a vacuous check: a reviewer, through the same routes, gets them
    raw = await every_get(env, server, "rita")
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


