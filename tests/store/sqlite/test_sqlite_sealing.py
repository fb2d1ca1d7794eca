"""Encryption at rest in the SQLite file: the planted-secret tests read the raw bytes of
the file and its WAL, so they prove what an attacker with a copy of the disk (or a
backup) would see; rekey rewrites pages in place; a sealed value moved by SQL to another
row or column does not open; a v14 file learns which spans were reconstructed.

The Apps, workflows and planted values are tests/test_store_codec.py's.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.codec import AESGCMCodec
from keel.engine.runtime import Settings
from keel.errors import PayloadUnreadable
from keel.store import User
from keel.store._sqlite_schema import MIGRATIONS, SCHEMA
from keel.store.sqlite import SQLiteStore
from tests.limits import WAIT
from tests.test_store_codec import (
    BEFORE,
    ID_A,
    KEY_A,
    PLANTED,
    _span_row,
    before_app,
    drive_everything,
    keel_cmd,
    model,
    waiter_app,
)


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


def db_path(store_url: str) -> Path:
    return Path(store_url.removeprefix("sqlite:///"))


def disk_bytes(store_url: str) -> dict[str, bytes]:
    """The store's files as an attacker with a copy of the disk would have them."""
    path = db_path(store_url)
    files = {"db": path.read_bytes()}
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        files["wal"] = wal.read_bytes()
    return files


def found(store_url: str, secrets: dict[str, str]) -> list[str]:
    files = disk_bytes(store_url)
    return [
        f"{what} in {name}"
        for what, secret in secrets.items()
        for name, data in files.items()
        if secret.encode() in data
    ]


def checkpoint(store_url: str) -> None:
    db = sqlite3.connect(db_path(store_url))
    try:
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(FULL)").fetchone()
        assert busy == 0
    finally:
        db.close()


async def test_planted_secrets_never_reach_the_database_file_or_its_wal(
    apps: Callable[..., keel.App], store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_ENCRYPTION_KEY", KEY_A)
    app = apps(model(), large_output_bytes=1024)
    run_id = await drive_everything(app)
    await app.trace(run_id)  # traces are stored too
    assert "wal" in disk_bytes(store_url) and len(disk_bytes(store_url)["wal"]) > 0
    assert found(store_url, PLANTED) == []  # the WAL not yet checkpointed
    checkpoint(store_url)
    assert found(store_url, PLANTED) == []  # and after

    # Everything reads back for a holder of the key: App, approvals, escalations, traces.
    steps = {s.name: s for s in await app.steps(run_id)}
    assert steps["lookup"].input == {"account": PLANTED["tool argument"]}
    (req,) = await app.approvals.list(status="all")
    assert PLANTED["approval argument"] in json.dumps(req.model_dump(), default=str)
    (esc,) = await app.escalations.list(status="all")
    assert PLANTED["escalation packet"] in esc.packet.model_dump_json()
    assert PLANTED["escalation resolution"] in json.dumps(esc.resolution)
    spans = json.dumps([s.attributes for s in await app.trace(run_id)], default=str)
    assert PLANTED["tool argument"] in spans and PLANTED["model prompt"] in spans
    assert (await app.get_run(run_id)).state == {"note": PLANTED["state"]}
    await app.close()

    # ... and through the CLI, which takes the key from the environment like the App.
    code, out, err = await keel_cmd(store_url, "show", run_id, "--json", key=KEY_A)
    assert code == 0, err
    assert PLANTED["run input"] in out and PLANTED["tool argument"] in out
    code, out, _ = await keel_cmd(store_url, "escalations", "list", "--status", "all", key=KEY_A)
    assert code == 0 and "fragile" in out
    code, out, err = await keel_cmd(store_url, "store", "keys", "--json", key=KEY_A)
    stored = json.loads(out)["stored"]
    assert code == 0 and [r["key_id"] for r in stored] == [ID_A], stored
    assert found(store_url, PLANTED) == []  # reading wrote nothing in clear either


async def test_without_a_key_the_same_run_is_in_clear(
    apps: Callable[..., keel.App], store_url: str
) -> None:
    """The control: the grep above finds what it looks for when nothing is sealed."""
    app = apps(model(), large_output_bytes=1024)
    await drive_everything(app)
    await app.close()
    checkpoint(store_url)
    assert len(found(store_url, PLANTED)) >= len(PLANTED)


async def test_a_clear_store_stays_readable_and_rekey_seals_it(
    apps: Callable[..., keel.App], store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = apps(large_output_bytes=1024)
    before = before_app(plain)
    done = await plain.start(before, {"secret": BEFORE["input"]}, id="b-done")
    await done.settle(WAIT)
    await done.signal("go", BEFORE["signal"])
    assert BEFORE["signal"] in await done.result(WAIT)
    waiting = await plain.start(before, {"secret": BEFORE["input"]}, id="b-waiting")
    await waiting.settle(WAIT)
    await plain.close()
    checkpoint(store_url)
    assert found(store_url, BEFORE)  # stored in clear: the store predates the key

    monkeypatch.setenv("KEEL_ENCRYPTION_KEY", KEY_A)
    sealed = apps(large_output_bytes=1024)
    before_app(sealed)
    expected = f"{BEFORE['input']}|{BEFORE['big']}|{BEFORE['signal']}"
    assert (await sealed.get_run("b-done")).result == expected
    (big,) = [s for s in await sealed.steps("b-done") if s.blob]
    assert BEFORE["big"].encode() in await sealed.store.load_blob(big.blob)  # a clear blob
    resumed = await sealed.start("before", id="b-waiting")
    await resumed.signal("go", "Zq-after-signal")
    assert "Zq-after-signal" in await resumed.result(WAIT)
    keys = await sealed.store.payload_keys()
    assert keys.get(None, 0) > 0 and keys.get(ID_A, 0) > 0  # both kinds, side by side
    await sealed.close()

    code, out, err = await keel_cmd(store_url, "store", "rekey", "--vacuum", key=KEY_A)
    assert code == 0, err
    assert f"{keys[None]} sealed (were in clear)" in out
    code, out, _ = await keel_cmd(store_url, "store", "keys", "--json", key=KEY_A)
    assert [r["key_id"] for r in json.loads(out)["stored"]] == [ID_A]
    assert found(store_url, BEFORE) == []  # no copy left in clear, in pages or the WAL
    code, out, _ = await keel_cmd(store_url, "show", "b-done", "--json", key=KEY_A)
    assert code == 0 and BEFORE["input"] in out and BEFORE["signal"] in out


async def test_rekey_zeroes_the_clear_values_it_seals_without_a_vacuum(store_url: str) -> None:
    secrets = {f"run {i}": f"Zq-sealed-in-place-{i:03d}" for i in range(100)}
    plain = SQLiteStore(store_url)
    for i, secret in enumerate(secrets.values()):
        await plain.create_run(f"r{i}", "wf", json.dumps({"secret": secret}).encode(), 1.0)
    await plain.close()
    checkpoint(store_url)
    assert len(found(store_url, secrets)) == 100

    sealed = SQLiteStore(store_url, AESGCMCodec([base64.b64decode(KEY_A)]))
    # Many SQLite builds zero deleted content by default, not all: rekey must not rely
    # on it to leave no clear copy in the pages it rewrites.
    sealed._db.execute("PRAGMA secure_delete=0")
    done = await sealed.rekey()
    assert (done.sealed, done.wal_truncated, done.vacuumed) == (100, True, False)
    assert sealed._db.execute("PRAGMA secure_delete").fetchone() == (0,)  # as it was
    await sealed.close()
    checkpoint(store_url)
    assert found(store_url, secrets) == []


async def test_rekey_seals_the_audit_log_and_leaves_it_append_only(store_url: str) -> None:
    plain = SQLiteStore(store_url)
    await plain.add_user(User("rita", "admin", "t1", "h", groups=("ops",), created_at=1.0))
    await plain.close()

    sealed = SQLiteStore(store_url, AESGCMCodec([base64.b64decode(KEY_A)]))
    assert (await sealed.rekey()).sealed == 1
    assert await sealed.payload_keys() == {ID_A: 1}  # the audit entry's detail
    (entry,) = await sealed.audit_log("rita")
    assert entry.action == "user_added"
    assert entry.detail == {"role": "admin", "groups": ["ops"]}
    # Rekey rewrote the entry past the trigger that refuses updates: it is back.
    for sql in ("UPDATE audit SET actor='someone else'", "DELETE FROM audit"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            sealed._db.execute(sql)
    await sealed.close()


async def test_a_sealed_value_cannot_be_moved_to_another_row_or_column(
    apps: Callable[..., keel.App], store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEEL_ENCRYPTION_KEY", KEY_A)
    app = apps()
    wf = waiter_app(app)
    for run_id in ("x-1", "x-2"):
        await app.start(wf, {"secret": run_id}, id=run_id, execute=False)
    db = sqlite3.connect(db_path(store_url))
    with db:
        db.execute("UPDATE runs SET input=(SELECT input FROM runs WHERE id='x-1') WHERE id='x-2'")
        db.execute("UPDATE runs SET result=input WHERE id='x-1'")
    db.close()
    for run_id, column in (("x-2", "runs.input"), ("x-1", "runs.result")):
        with pytest.raises(PayloadUnreadable) as caught:
            await app.get_run(run_id)
        assert str(caught.value) == (
            f"cannot read {column} of {run_id}: it does not authenticate under key {ID_A}:"
            " the stored value was changed or moved from another row or column"
        )


async def test_a_v14_store_learns_which_spans_were_reconstructed(tmp_path: Path) -> None:
    path = tmp_path / "keel.db"
    db = sqlite3.connect(path)
    db.executescript(
        SCHEMA + "".join(MIGRATIONS[v] for v in range(2, 15)) + "PRAGMA user_version=14;"
    )
    db.execute(
        "INSERT INTO spans (span_id, trace_id, parent_id, run_id, name, kind, start_ns,"
        " end_ns, status, status_message, attributes, events, links)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        dataclasses.astuple(
            _span_row({"keel.execution": 1, "keel.execution.interrupted": True}, "ERROR")
        ),
    )
    db.commit()
    db.close()
    store = SQLiteStore(f"sqlite:///{path}")
    try:
        await store.write_spans([_span_row({"keel.execution": 1}, "OK")])
        ((row),) = await store.load_spans("0" * 31 + "1")
        assert row.status == "OK"
    finally:
        await store.close()
