"""Encryption at rest: every journaled payload sealed by the App's codec (keel.codec).

What reaches the SQLite file's bytes (the planted-secret tests, rekey in place, values
moved by SQL, upgrades) is tests/store/sqlite/test_sqlite_sealing.py's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

import keel
from keel.cli import cli
from keel.codec import AESGCMCodec, key_id, new_key
from keel.engine.runtime import Settings
from keel.errors import ConfigError, PayloadUnreadable
from keel.llm import Gateway, Reply, ScriptedModel
from keel.store import SpanRecord, open_store
from tests.backends import fresh_url
from tests.limits import WAIT

KEY_A, KEY_B, KEY_C = new_key(), new_key(), new_key()
ID_A, ID_B, ID_C = (key_id(base64.b64decode(k)) for k in (KEY_A, KEY_B, KEY_C))

# One distinct secret per place a payload can land; none may reach the disk in clear.
PLANTED = {
    "run input": "Zq-run-input-4d1f",
    "tool argument": "Zq-tool-arg-8a2c",
    "tool result": "Zq-tool-result-c3e9",
    "state": "Zq-state-51b7",
    "signal payload": "Zq-signal-0e6d",
    "approval argument": "Zq-approval-arg-7f40",
    "escalation packet": "Zq-escalation-9b13",
    "escalation resolution": "Zq-resolution-2c88",
    "large output": "Zq-large-output-6a5e",
    "model prompt": "Zq-prompt-d2f1",
    "model reply": "Zq-reply-a7c4",
}


@pytest.fixture(autouse=True)
def _no_key_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KEEL_ENCRYPTION_KEY", "KEEL_ENCRYPTION_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def apps(store_url: str) -> AsyncIterator[Callable[..., keel.App]]:
    """Apps on this test's store, built under whatever KEEL_ENCRYPTION_KEY is set then."""
    made: list[keel.App] = []

    def make(llm: Any = None, **kw: Any) -> keel.App:
        app = keel.App(store_url, settings=Settings(poll_interval=0.02, **kw), llm=llm)
        made.append(app)
        return app

    yield make
    for app in made:
        await app.close()


async def keel_cmd(store_url: str, *args: str, key: str | None = None) -> tuple[int, str, str]:
    """The `keel` CLI on the store, with KEEL_ENCRYPTION_KEY set to `key` (or unset)."""

    def invoke() -> Any:
        env = {"KEEL_STORE": store_url, "COLUMNS": "240", "KEEL_ENCRYPTION_KEY": key}
        return CliRunner().invoke(cli, list(args), env=env)

    res = await asyncio.to_thread(invoke)
    return res.exit_code, res.stdout, res.stderr


class Notes(BaseModel):
    note: str = ""


def model() -> Gateway:
    scripted = ScriptedModel(default=Reply(content=f"the answer is {PLANTED['model reply']}"))
    # cache=True: the reply also lands in the response cache, which must be sealed too
    return Gateway({"m": scripted}, cache=True, retry=keel.Retry(attempts=1))


def everything_app(app: keel.App) -> Any:
    """A workflow that puts a planted secret in every kind of payload Keel stores."""

    @app.tool
    async def lookup(account: str) -> str:
        return f"balance for {account}: {PLANTED['tool result']}"

    @app.tool
    async def report(title: str) -> str:  # over large_output_bytes: stored out of line
        return f"{title} {PLANTED['large output']} " + "x" * 4000

    @app.tool(irreversible=True)
    async def pay(to: str) -> str:
        return "paid"

    @app.tool(fallback=keel.Fallback.human(queue="ops"))
    async def fragile(item: str) -> str:
        raise ValueError(f"cannot handle {PLANTED['escalation packet']}")

    @app.workflow(state=Notes)
    async def everything(ctx: keel.Context, secret: str) -> str:
        ctx.state.note = PLANTED["state"]
        balance = await ctx.call(lookup, PLANTED["tool argument"])
        big = await ctx.call(report, "quarterly")
        signal = await ctx.wait_for("go")
        await ctx.call(pay, PLANTED["approval argument"])
        fixed = await ctx.call(fragile, "widget")
        reply = await ctx.llm.text(f"summarise {PLANTED['model prompt']}")
        return " | ".join([secret, balance, big[:60], json.dumps(signal), fixed, reply])

    return everything


async def drive_everything(app: keel.App) -> str:
    """Run `everything` to its end, deciding what a person decides; its run id."""
    wf = everything_app(app)
    handle = await app.start(wf, {"secret": PLANTED["run input"]})
    assert (await handle.settle(WAIT)).waiting_on == ["go"]
    await app.signal(handle.id, "go", {"word": PLANTED["signal payload"]})
    await handle.settle(WAIT)
    (req,) = await app.approvals.list()
    await app.approvals.approve(req.id, by="dana")
    await handle.settle(WAIT)
    (esc,) = await app.escalations.list()
    await app.escalations.resolve(esc.id, PLANTED["escalation resolution"], by="dana")
    result = await handle.result(WAIT)
    for what in ("run input", "tool result", "signal payload", "model reply"):
        assert PLANTED[what] in result, what
    return handle.id


# -- the planted-secret test ------------------------------------------------------------


# -- rotation, rekey, missing keys ----------------------------------------------------


def waiter_app(app: keel.App) -> Any:
    @app.tool
    async def echo(text: str) -> str:
        return f"echo {text}"

    @app.workflow
    async def waiter(ctx: keel.Context, secret: str) -> str:
        first = await ctx.call(echo, secret)
        word = await ctx.wait_for("go")
        return f"{first} / {word}"

    return waiter


async def test_a_run_suspended_under_one_key_resumes_after_rotation_and_rekey(
    apps: Callable[..., keel.App], store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_ENCRYPTION_KEY", KEY_A)
    old = apps()
    handle = await old.start(waiter_app(old), {"secret": "Zq-rot-input"}, id="rot-1")
    assert (await handle.settle(WAIT)).status is keel.RunStatus.WAITING
    await old.close()

    monkeypatch.setenv("KEEL_ENCRYPTION_KEY", f"{KEY_B},{KEY_A}")  # B current, A still read
    rotated = apps()
    waiter_app(rotated)
    handle = await rotated.start("waiter", id="rot-1")  # attach: this process resumes it
    await handle.signal("go", "Zq-rot-signal")
    assert await handle.result(WAIT) == "echo Zq-rot-input / Zq-rot-signal"
    await rotated.close()
    keys = await apps().store.payload_keys()
    assert keys.get(ID_A, 0) > 0 and keys.get(ID_B, 0) > 0  # old values stay under A

    code, out, err = await keel_cmd(store_url, "store", "rekey", key=f"{KEY_B},{KEY_A}")
    assert code == 0, err
    assert f"rekeyed to key {ID_B}" in out and f"every stored payload is under key {ID_B}" in out
    assert f"{keys[ID_A]} re-encrypted from older keys" in out

    monkeypatch.setenv("KEEL_ENCRYPTION_KEY", KEY_B)  # A removed
    only_b = apps()
    assert (await only_b.get_run("rot-1")).result == "echo Zq-rot-input / Zq-rot-signal"
    assert next(s.output for s in await only_b.steps("rot-1")) == "echo Zq-rot-input"
    assert await only_b.store.payload_keys() == {ID_B: keys[ID_A] + keys[ID_B]}  # all moved
    await only_b.close()

    # A process given only the removed key says which key it lacks, never garbage.
    code, _, err = await keel_cmd(store_url, "show", "rot-1", key=KEY_A)
    assert code == 3
    assert err.count("\n") == 1 and f"encrypted with key {ID_B}, which is not configured" in err
    assert KEY_A not in err and KEY_B not in err


async def test_a_missing_key_is_a_clear_error_and_fails_no_run(
    apps: Callable[..., keel.App], store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_ENCRYPTION_KEY", KEY_A)
    writer = apps()
    waiter_app(writer)
    await writer.start("waiter", {"secret": "Zq-missing"}, id="m-1", execute=False)
    await writer.close()

    monkeypatch.delenv("KEEL_ENCRYPTION_KEY")
    with pytest.raises(PayloadUnreadable) as caught:
        await apps().get_run("m-1")
    assert str(caught.value) == (
        f"cannot read runs.input of m-1: it is encrypted (key {ID_A}) and no key is configured;"
        " set KEEL_ENCRYPTION_KEY to the keys this store was written with"
    )
    assert caught.value.key_id == ID_A and caught.value.where == "runs.input"
    assert caught.value.kind == "unreadable"  # a worker stops on it: waiting cannot fix it
    code, _, err = await keel_cmd(store_url, "runs")
    assert code == 3 and f"(key {ID_A}) and no key is configured" in err

    # A worker with the wrong key stops on the first run it cannot read; the run is
    # intact and finishes once a worker with the right key takes it.
    monkeypatch.setenv("KEEL_ENCRYPTION_KEY", KEY_C)
    wrong = apps()
    waiter_app(wrong)
    worker = wrong.worker()  # a standalone worker pauses through faults that can pass
    with pytest.raises(PayloadUnreadable, match=f"encrypted with key {ID_A}, which is not"):
        await asyncio.wait_for(worker.serve(), WAIT)
    monkeypatch.setenv("KEEL_ENCRYPTION_KEY", KEY_A)
    right = apps()
    waiter_app(right)
    # handed back at once, not held until its 30 s lease expires: another owner takes it
    # now (and gives it back, for the worker below)
    taken = await right.store.claim("probe", 30, 1, ["waiter"], ids=["m-1"])
    assert [c.run.id for c in taken] == ["m-1"]
    await right.store.release_run("m-1", "probe", [], await right.store.now())
    handle = await right.start("waiter", id="m-1")  # attach: its recorded input stands
    assert (await handle.settle(WAIT)).status is keel.RunStatus.WAITING
    await handle.signal("go", "later")
    assert await handle.result(WAIT) == "echo Zq-missing / later"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not base64!", "KEEL_ENCRYPTION_KEY: key 1 is not base64"),
        (
            base64.b64encode(b"k" * 16).decode(),
            "encryption key 1 is 16 bytes; AES-256-GCM needs 32",
        ),
        ("", "KEEL_ENCRYPTION_KEY is set but empty"),
        (f"{KEY_A},", "KEEL_ENCRYPTION_KEY: key 2 of 2 is empty (a stray comma?)"),
    ],
)
async def test_a_bad_key_is_a_one_line_error(
    store_url: str, monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("KEEL_ENCRYPTION_KEY", value)
    with pytest.raises(ConfigError) as caught:
        keel.App(store_url)
    assert message in str(caught.value)
    if value:
        assert value.split(",")[0] not in str(caught.value)  # never echoes a key
    code, out, err = await keel_cmd(store_url, "runs", key=value)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err


async def test_keys_from_a_file_and_from_code(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "key"
    path.write_text(f"{KEY_B},{KEY_A}\n")
    monkeypatch.setenv("KEEL_ENCRYPTION_KEY_FILE", str(path))
    app = keel.App(store_url)
    assert isinstance(app.codec, AESGCMCodec) and app.codec.key_ids == [ID_B, ID_A]
    monkeypatch.setenv("KEEL_ENCRYPTION_KEY", KEY_A)
    with pytest.raises(ConfigError, match="both KEEL_ENCRYPTION_KEY and KEEL_ENCRYPTION_KEY_FILE"):
        keel.App(store_url)
    monkeypatch.delenv("KEEL_ENCRYPTION_KEY")
    monkeypatch.setenv("KEEL_ENCRYPTION_KEY_FILE", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="cannot read key file"):
        keel.App(store_url)
    monkeypatch.delenv("KEEL_ENCRYPTION_KEY_FILE")
    # A codec in code wins over the environment; any object with the three members works.
    coded = keel.App(store_url, codec=Reversed())
    waiter_app(coded)
    handle = await coded.start("waiter", {"secret": "Zq-coded"})
    await handle.settle(WAIT)
    assert set(await coded.store.payload_keys()) == {"rev-1"}
    assert (await coded.get_run(handle.id)).input == {"secret": "Zq-coded"}
    await coded.close()


class Reversed:
    """A toy codec (not encryption): what any user codec has to provide."""

    key_id = "rev-1"

    def encode(self, data: bytes, context: bytes) -> bytes:
        return data[::-1]

    def decode(self, data: bytes, key_id: str, context: bytes) -> bytes:
        return data[::-1]


# -- a store written before encryption was turned on ------------------------------------

BEFORE = {"input": "Zq-before-input", "big": "Zq-before-big", "signal": "Zq-before-signal"}


def before_app(app: keel.App) -> Any:
    @app.tool
    async def big(tag: str) -> str:  # stored out of line
        return f"{tag} {BEFORE['big']} " + "y" * 4000

    @app.workflow
    async def before(ctx: keel.Context, secret: str) -> str:
        out = await ctx.call(big, "t")
        word = await ctx.wait_for("go")
        return f"{secret}|{out.split()[1]}|{word}"

    return before


async def test_rekey_without_a_key_says_what_to_do(store_url: str) -> None:
    code, _, err = await keel_cmd(store_url, "store", "rekey")
    assert code == 2 and "no encryption key is configured" in err and "keel store new-key" in err


async def test_new_key_prints_a_usable_key(store_url: str) -> None:
    code, out, _ = await keel_cmd(store_url, "store", "new-key")
    assert code == 0 and len(base64.b64decode(out.strip(), validate=True)) == 32
    assert AESGCMCodec.from_text(out.strip()).key_id == key_id(base64.b64decode(out.strip()))


# -- integrity: a sealed value opens only where it was written --------------------------


# -- no SQL looks inside a sealed column: the trace store's upsert ----------------------


def _span_row(attrs: dict[str, Any], status: str) -> SpanRecord:
    return SpanRecord(
        "00000000000000a1",
        "0" * 31 + "1",
        None,
        "r1",
        "execute wf",
        "INTERNAL",
        1,
        2,
        status,
        None,
        json.dumps(attrs),
        None,
        None,
    )


async def test_a_real_span_replaces_a_reconstructed_one_in_a_sealed_trace_store(
    tmp_path: Path,
) -> None:
    store = open_store(fresh_url(tmp_path), AESGCMCodec.from_text(KEY_A))
    try:
        ghost = _span_row({"keel.execution": 1, "keel.execution.interrupted": True}, "ERROR")
        real = _span_row({"keel.execution": 1}, "OK")
        await store.write_spans([ghost])
        await store.write_spans([real])  # the execution's own span arrives late: it wins
        await store.write_spans([ghost])  # a reconstruction never replaces a real span
        ((row),) = await store.load_spans("0" * 31 + "1")
        assert row.status == "OK" and json.loads(row.attributes) == {"keel.execution": 1}
    finally:
        await store.close()


# -- rekey while a worker writes --------------------------------------------------------

ROUNDS = 5
_GO_ON = {"busy": False}  # read by the tool `more`: runs keep writing while it is set


def busy_app(app: keel.App) -> Any:
    @app.tool
    async def square(n: int) -> dict[str, int]:
        await asyncio.sleep(0.01)
        return {"n": n, "sq": n * n}

    @app.tool
    async def more() -> bool:  # journaled, so a replay takes the same number of turns
        return _GO_ON["busy"]

    @app.workflow
    async def busy(ctx: keel.Context, seed: int) -> int:
        total, i = 0, 0
        while i < ROUNDS or await ctx.call(more):
            total += (await ctx.call(square, seed + i))["sq"]
            i += 1
        return total

    return busy


async def test_rekey_while_a_worker_writes_loses_nothing(
    apps: Callable[..., keel.App], store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_ENCRYPTION_KEY", KEY_A)
    old = apps()
    wf = busy_app(old)
    seeds = list(range(0, 100_000, 1000))
    for seed in seeds[:20]:  # finished under A: rekey has work from the start
        await old.start(wf, {"seed": seed}, id=f"busy-{seed}")
    for seed in seeds[:20]:
        await old.handle(f"busy-{seed}").result(WAIT)
    await old.close()

    both = f"{KEY_B},{KEY_A}"
    monkeypatch.setenv("KEEL_ENCRYPTION_KEY", both)
    live = apps()
    busy_app(live)
    _GO_ON["busy"] = True  # they write step after step until both rekeys are done
    try:
        handles = [await live.start("busy", {"seed": s}, id=f"busy-{s}") for s in seeds[20:]]
        env = {**os.environ, "KEEL_STORE": store_url, "KEEL_ENCRYPTION_KEY": both}
        for _ in range(2):  # small batches, in another process, while the worker writes
            proc = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "keel.cli", "store", "rekey", "--batch", "7"),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            _, err = await asyncio.wait_for(proc.communicate(), WAIT)
            # exit 1 would mean values left under A or in clear: no writer here has only A
            assert proc.returncode == 0, err.decode()
            assert not any([(await h.status()).terminal for h in handles])  # still writing
    finally:
        _GO_ON["busy"] = False
    for h in handles:
        await h.result(WAIT)
    for seed in seeds:
        run = await live.get_run(f"busy-{seed}")
        outputs = [s.output for s in await live.steps(run.id) if s.name == "square"]
        assert sorted(o["n"] for o in outputs) == [seed + i for i in range(len(outputs))]
        assert run.result == sum(o["sq"] for o in outputs), run
        assert len(outputs) >= ROUNDS
    assert set(await live.store.payload_keys()) == {ID_B}


def test_import_keel_and_an_app_without_a_key_do_not_load_cryptography(tmp_path: Path) -> None:
    code = (
        "import sys, keel; keel.App(sys.argv[1]);"
        " assert 'cryptography' not in sys.modules, 'loaded'"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_ENCRYPTION")}
    url = fresh_url(tmp_path)
    subprocess.run([sys.executable, "-c", code, url], check=True, env=env, timeout=WAIT)


async def test_a_reply_cached_in_redis_is_sealed_too(
    redis_url: str, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis.asyncio as aioredis

    monkeypatch.setenv("KEEL_ENCRYPTION_KEY", KEY_A)
    calls: list[int] = []
    reply = f"Zq-redis-reply-{os.getpid()}-{id(calls)}"  # the Redis is shared by the session

    def answer(messages: list[dict[str, Any]]) -> str:
        calls.append(1)
        return reply

    results = []
    for _ in range(2):  # the second App (another process, as it were) hits the cache
        app = keel.App(
            store_url,
            llm=Gateway(
                {"m": ScriptedModel(answer, name="sealed-cache")}, redis_url=redis_url, cache=True
            ),
        )

        @app.workflow
        async def ask(ctx: keel.Context, q: str) -> str:
            return str(await ctx.llm.text(q))

        results.append(await (await app.start(ask, {"q": f"ask {reply}"})).result(WAIT))
        await app.close()
    assert results == [reply, reply] and len(calls) == 1
    client = aioredis.from_url(redis_url)
    try:
        values = [await client.get(k) for k in await client.keys("llm:*")]
    finally:
        await client.aclose()
    assert not [v for v in values if reply.encode() in v]
    assert any(v.startswith(b"\x00KC\x01") for v in values)


async def test_a_console_without_the_key_says_which_key_it_lacks(
    apps: Callable[..., keel.App], store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    from keel.server.app import create_app
    from keel.server.auth import add_user

    monkeypatch.setenv("KEEL_ENCRYPTION_KEY", KEY_A)
    writer = apps()
    await writer.start(waiter_app(writer), {"secret": "Zq-console"}, id="c-1", execute=False)
    monkeypatch.delenv("KEEL_ENCRYPTION_KEY")
    keyless = apps()
    token = await add_user(keyless.store, "ada", "admin", [])  # users are metadata: clear
    transport = httpx.ASGITransport(app=create_app(keyless), client=("10.0.0.1", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://keel.test") as client:
        got = await client.get("/api/v1/runs/c-1", headers={"Authorization": f"Bearer {token}"})
    assert got.status_code == 503
    assert got.json()["detail"].startswith(
        f"cannot read runs.input of c-1: it is encrypted (key {ID_A})"
    )
    assert "Zq-console" not in got.text
