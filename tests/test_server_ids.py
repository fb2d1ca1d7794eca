"""Ids with `/`, `?`, `#`, `%`, markup and any script open and decide in the API, the
console and the CLI: run ids, user names, and approval, escalation and review ids (which
embed step keys: `r:map:one#0/1/approval:send#0`). Ids no URL can hold (whitespace,
control characters, `.` and `..`) are refused at creation with one message everywhere."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import keel
from keel.engine.runtime import Settings
from keel.hitl import Approval, Sample
from keel.server.access import endpoints
from keel.server.app import create_app
from keel.server.auth import add_user
from keel.server.paths import url_id
from tests.backends import fresh_url
from tests.limits import WAIT
from tests.services.pages import csrf_of, sample_of, sign_in

SETTLE = WAIT
SPECIAL = [
    "team/alice",
    "../../etc/passwd",
    "</script><script>window.x=1</script>",
    "what?x=1&y=2",
    "a#b",
    "100%",
    "%2F%2e%2e%25",
    "ünï/日本語",
    "a+b;c,d=e",
    "q\"uo'te",
    "back\\slash",
    "/leading",
    "trailing/",
    "...",
    "-",
]
REFUSED = [
    ("a b", "contains a space"),
    (" rita", "contains a space"),
    ("tab\tx", "contains U+0009"),
    ("zero\u200bwidth", "contains U+200B (zero width space)"),
    ("bidi\u202eevil", "contains U+202E"),
    ("nul\x00", "contains U+0000"),
    (".", "cannot be addressed in a URL"),
    ("..", "cannot be addressed in a URL"),
    ("x" * 201, "is 201 characters"),
]


class Env:
    def __init__(self, app: keel.App, server: Any) -> None:
        self.app, self.server = app, server
        self.tokens: dict[str, str] = {}
        self.wf: dict[str, Any] = {}

    def client(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.server, client=("10.0.0.1", 5000))
        return httpx.AsyncClient(transport=transport, base_url="http://keel.test")

    def auth(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    async def waiting(self, workflow: str, args: dict[str, Any], run_id: str) -> None:
        info = await (await self.app.start(self.wf[workflow], args, id=run_id)).settle(SETTLE)
        assert info.status is keel.RunStatus.WAITING, info


@pytest.fixture
async def env(store_url: str) -> AsyncIterator[Env]:
    app = keel.App(store_url, settings=Settings(poll_interval=0.02))

    @app.tool(irreversible=True, approval=Approval(queue="payments", reason="moves money"))
    async def send(to: str) -> str:
        return f"sent {to}"

    @app.workflow
    async def pay(ctx: keel.Context, to: str) -> str:
        return await ctx.call(send, to)

    async def one(ctx: keel.Context, item: str) -> str:
        return await ctx.call(send, item)

    @app.workflow
    async def fan(ctx: keel.Context, items: list[str]) -> list[str]:
        return list((await ctx.map(one, items)).ok)

    @app.tool(retry=keel.Retry(attempts=1), fallback=keel.Fallback.human(queue="payments"))
    async def look(x: str) -> str:
        raise RuntimeError("503 upstream")

    @app.workflow
    async def fan_fail(ctx: keel.Context, items: list[str]) -> list[str]:
        return [str(v) for v in (await ctx.map(look, items)).ok]

    @app.workflow(sample=Sample(rate=1.0, queue="payments"))
    async def graded(ctx: keel.Context, text: str) -> str:
        return text.upper()

    e = Env(app, create_app(app, secure_cookies=False))
    e.wf = {"pay": pay, "fan": fan, "fan_fail": fan_fail, "graded": graded}
    e.tokens["rita"] = await add_user(app.store, "rita", "reviewer", ["payments"])
    e.tokens["ada"] = await add_user(app.store, "ada", "admin")
    yield e
    await app.close()


def test_every_path_parameter_is_one_percent_encoded_segment(tmp_path: Path) -> None:
    found = endpoints(create_app(keel.App(fresh_url(tmp_path, "k"))))
    params = [p for e in found for p in re.findall(r"\{([^}]*)\}", e.pattern)]
    assert len(params) >= 20
    assert all(p.endswith(":keel_id") for p in params), params


async def test_special_run_and_approval_ids_open_and_decide_through_the_api(env: Env) -> None:
    async with env.client() as c:
        for rid in SPECIAL:
            await env.waiting("pay", {"to": "bob"}, rid)
            aid = f"{rid}:approval:send#0"
            run = await c.get(f"/api/v1/runs/{url_id(rid)}", headers=env.auth("rita"))
            assert run.status_code == 200 and run.json()["run"]["id"] == rid, (rid, run.text)
            trace = await c.get(f"/api/v1/runs/{url_id(rid)}/trace", headers=env.auth("rita"))
            assert trace.status_code == 200 and trace.json()["run_id"] == rid
            got = await c.get(f"/api/v1/approvals/{url_id(aid)}", headers=env.auth("rita"))
            assert got.status_code == 200 and got.json()["id"] == aid, (aid, got.text)
            done = await c.post(f"/api/v1/approvals/{url_id(aid)}/approve",
                                headers=env.auth("rita"), json={})
            assert done.status_code == 200 and done.json()["status"] == "approved", done.text
            assert await env.app.handle(rid).result(SETTLE) == "sent bob"


async def test_special_run_and_approval_ids_open_and_decide_in_the_console(env: Env) -> None:
    async with env.client() as c:
        await sign_in(c, env.tokens["rita"])
        for rid in SPECIAL:
            await env.waiting("pay", {"to": "bob"}, rid)
            aid = f"{rid}:approval:send#0"
            inbox = (await c.get("/inbox")).text
            href = f"/approvals/{url_id(aid)}"
            assert f'href="{html_attr(href)}"' in inbox, (aid, href)
            page = await c.get(href)
            assert page.status_code == 200 and 'id="approve"' in page.text, (aid, page.text)
            assert f'href="/runs/{html_attr(url_id(rid))}"' in page.text  # its run
            action = re.search(r'<form id="decide-form" method="post" action="([^"]+)"',
                               page.text)
            assert action and unescape(action.group(1)) == href + "/approve"
            r = await c.post(href + "/approve", data={"csrf": csrf_of(page.text),
                                                      "arg.to": "bob"})
            assert r.status_code == 303 and r.headers["location"] == href, (aid, r.text)
            assert await env.app.handle(rid).result(SETTLE) == "sent bob"
            run_page = await c.get(f"/runs/{url_id(rid)}")
            assert run_page.status_code == 200 and "SUCCEEDED" in run_page.text, rid
            assert f'href="{html_attr(href)}"' in run_page.text  # the request, from its run
            assert "<script>window.x" not in run_page.text + page.text + inbox


async def test_map_item_approvals_and_escalations_hold_a_slash_and_still_open(
    env: Env,
) -> None:
    await env.waiting("fan", {"items": ["x", "y"]}, "fan/1#?")
    await env.waiting("fan_fail", {"items": ["z"]}, "esc/1%")
    ids = sorted(r.id for r in await env.app.approvals.list())
    assert ids == ["fan/1#?:map:one#0/0/approval:send#0", "fan/1#?:map:one#0/1/approval:send#0"]
    [esc] = await env.app.escalations.list()
    assert esc.id == "esc/1%:map:look#0/0"
    async with env.client() as api, env.client() as web:
        await sign_in(web, env.tokens["rita"])
        got = await api.post(f"/api/v1/approvals/{url_id(ids[0])}/approve",
                             headers=env.auth("rita"), json={"note": "ok"})
        assert got.status_code == 200, got.text
        page = await web.get(f"/approvals/{url_id(ids[1])}")
        assert page.status_code == 200 and 'id="approve"' in page.text
        r = await web.post(f"/approvals/{url_id(ids[1])}/reject",
                           data={"csrf": csrf_of(page.text), "reason": "not y"})
        assert r.status_code == 303
        live = await web.get(f"/approvals/{url_id(ids[1])}/live")
        assert live.json()["status"] == "rejected"
        # the escalation: its page, then a resolution through the API
        esc_page = await web.get(f"/escalations/{url_id(esc.id)}")
        assert esc_page.status_code == 200 and "503 upstream" in esc_page.text
        one = await api.get(f"/api/v1/escalations/{url_id(esc.id)}", headers=env.auth("rita"))
        assert one.status_code == 200 and one.json()["id"] == esc.id
        done = await api.post(f"/api/v1/escalations/{url_id(esc.id)}/resolve",
                              headers=env.auth("rita"), json={"result": "fixed"})
        assert done.status_code == 200 and done.json()["status"] == "resolved", done.text
    assert await env.app.handle("esc/1%").result(SETTLE) == ["fixed"]


async def test_sampled_reviews_of_special_runs_open_and_take_a_verdict(env: Env) -> None:
    rids = ["g/1#?", "g/2%<b>"]
    for rid in rids:
        await (await env.app.start(env.wf["graded"], {"text": "hi"}, id=rid)).result(SETTLE)
    # A run's sample is opened just after it ends (keel/hitl/sampling.py).
    found = {(await sample_of(env.app, rid)).run_id: f"{rid}:sample" for rid in rids}
    async with env.client() as api, env.client() as web:
        await sign_in(web, env.tokens["rita"])
        first = found[rids[0]]
        got = await api.get(f"/api/v1/reviews/{url_id(first)}", headers=env.auth("rita"))
        assert got.status_code == 200 and got.json()["id"] == first
        v = await api.post(f"/api/v1/reviews/{url_id(first)}/verdict",
                           headers=env.auth("rita"), json={"correct": True})
        assert v.status_code == 200 and v.json()["status"] == "correct"
        second = found[rids[1]]
        page = await web.get(f"/reviews/{url_id(second)}")
        assert page.status_code == 200
        r = await web.post(f"/reviews/{url_id(second)}/verdict",
                           data={"csrf": csrf_of(page.text), "verdict": "incorrect"})
        assert r.status_code == 303 and r.headers["location"] == f"/reviews/{url_id(second)}"
    assert (await env.app.reviews.get(second)).status == "incorrect"


async def test_special_user_names_are_managed_through_the_api_and_the_console(
    env: Env,
) -> None:
    async with env.client() as api, env.client() as web:
        await sign_in(web, env.tokens["ada"])
        for name in SPECIAL:
            made = await api.post("/api/v1/users", headers=env.auth("ada"),
                                  json={"name": name, "role": "viewer"})
            assert made.status_code == 201 and made.json()["name"] == name, made.text
            me = await api.get("/api/v1/me",
                               headers={"Authorization": f"Bearer {made.json()['token']}"})
            assert me.json()["name"] == name
            page = (await web.get("/users")).text
            assert f'action="/users/{html_attr(url_id(name))}/rotate"' in page, name
            rotated = await web.post(f"/users/{url_id(name)}/rotate",
                                     data={"csrf": csrf_of(page)})
            assert rotated.status_code == 200 and "token-value" in rotated.text, name
            token = await api.post(f"/api/v1/users/{url_id(name)}/token",
                                   headers=env.auth("ada"))
            assert token.status_code == 200 and token.json()["name"] == name
            if SPECIAL.index(name) % 2:
                gone = await web.post(f"/users/{url_id(name)}/remove",
                                      data={"csrf": csrf_of(page), "confirm": name})
                assert gone.status_code == 303, (name, gone.text)
            else:
                gone = await api.delete(f"/api/v1/users/{url_id(name)}", headers=env.auth("ada"))
                assert gone.status_code == 204, (name, gone.text)
            assert await env.app.store.get_user(name) is None


async def test_ids_no_url_can_hold_are_refused_with_one_message_everywhere(env: Env) -> None:
    async with env.client() as api, env.client() as web:
        await sign_in(web, env.tokens["ada"])
        csrf = csrf_of((await web.get("/users")).text)
        for bad, why in REFUSED:
            with pytest.raises(keel.ConfigError) as direct:
                await add_user(env.app.store, bad, "viewer")
            message = direct.value.message
            assert message.startswith("user name ") and why in message, message
            assert "1-200 characters without whitespace or control characters" in message
            made = await api.post("/api/v1/users", headers=env.auth("ada"),
                                  json={"name": bad, "role": "viewer"})
            assert made.status_code == 422 and made.json()["detail"] == message, made.text
            form = await web.post("/users", data={"csrf": csrf, "name": bad, "role": "viewer"})
            assert form.status_code == 422
            shown = re.search(r'id="err-name"[^>]*>(.*?)</', form.text, re.S)
            assert shown and unescape(shown.group(1)).strip() == message
            with pytest.raises(keel.InputError) as run:
                await env.app.start(env.wf["pay"], {"to": "bob"}, id=bad)
            assert run.value.message == message.replace("user name", "run id", 1)
    assert [u.name for u in await env.app.store.list_users()] == ["ada", "rita"]
    assert await env.app.list_runs() == []


# -- the CLI and a real server ------------------------------------------------------------

CLI_ID = "team/a?b#c%d<e>ü"


def _keel(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env["KEEL_STORE"] = fresh_url(tmp_path)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent.parent),
                                         env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "keel", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=WAIT)


APP = '''
import keel
from keel.hitl import Approval
app = keel.App()

@app.tool(irreversible=True, approval=Approval(queue="payments", reason="moves money"))
async def send(to: str) -> str:
    return f"sent {to}"

async def one(ctx, item: str) -> str:
    return await ctx.call(send, item)

@app.workflow
async def fan(ctx: keel.Context, items: list[str]) -> list[str]:
    return list((await ctx.map(one, items)).ok)
'''


def test_the_cli_takes_the_same_ids_and_refuses_the_same_ones(tmp_path: Path) -> None:
    (tmp_path / "ids_app.py").write_text(APP)
    started = _keel(tmp_path, "run", "ids_app.py:fan", "--input", '{"items": ["x"]}',
                    "--id", CLI_ID, "--json")
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["status"] == "WAITING"
    aid = f"{CLI_ID}:map:one#0/0/approval:send#0"
    shown = _keel(tmp_path, "approvals", "show", aid, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == aid, shown.stderr
    done = _keel(tmp_path, "approvals", "approve", aid, "--by", "rita")
    assert done.returncode == 0 and "approved" in done.stdout, done.stderr
    assert _keel(tmp_path, "show", CLI_ID).returncode == 0
    added = _keel(tmp_path, "users", "add", CLI_ID, "--role", "viewer")
    assert added.returncode == 0 and added.stdout.startswith("keel_"), added.stderr
    assert _keel(tmp_path, "users", "rotate", CLI_ID).returncode == 0
    assert _keel(tmp_path, "users", "remove", CLI_ID).returncode == 0
    for bad, why in (("a b", "contains a space"), ("..", "cannot be addressed in a URL")):
        refused = _keel(tmp_path, "users", "add", bad, "--role", "viewer")
        assert refused.returncode == 2 and why in refused.stderr, refused.stderr
        assert refused.stderr.startswith("error: user name ")
        run = _keel(tmp_path, "run", "ids_app.py:fan", "--input", '{"items": []}', "--id", bad)
        assert run.returncode != 0 and why in run.stderr and "run id" in run.stderr, run.stderr


def test_a_real_server_routes_encoded_ids(tmp_path: Path) -> None:
    from tests.services.console_server import console_server

    with console_server(tmp_path, worker=False) as console:
        token = console.add_user(CLI_ID, "reviewer", ["*"])
        console.start("ping", {}, id=CLI_ID)
        status, body = console.api("GET", f"/runs/{url_id(CLI_ID)}", token)
        assert status == 200 and body["run"]["id"] == CLI_ID, body
        status, body = console.api("GET", "/me", token)
        assert body["name"] == CLI_ID


def html_attr(text: str) -> str:
    """`text` as Jinja escapes it inside an attribute."""
    import html

    return html.escape(text, quote=True).replace("&#x27;", "&#39;")


def unescape(text: str) -> str:
    import html

    return html.unescape(text)
