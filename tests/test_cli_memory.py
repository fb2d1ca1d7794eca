"""`keel memory namespaces [--json]`: the namespaces of a store's long-term memory with
their counts (the other `keel memory` commands are exercised in docs/memory.md)."""

from __future__ import annotations

import asyncio
import json

from typer.testing import CliRunner

import keel
from keel.cli import cli
from tests.memory_embedders import HashedWords


def _keel(store_url: str, *args: str) -> str:
    env = {"KEEL_STORE": store_url, "COLUMNS": "200", "NO_COLOR": "1"}
    res = CliRunner().invoke(cli, ["memory", *args], env=env)
    assert res.exit_code == 0, res.output
    return res.stdout


async def test_namespaces_lists_counts_in_name_order(store_url: str) -> None:
    assert "no memories in this store yet" in await asyncio.to_thread(
        _keel, store_url, "namespaces"
    )
    app = keel.App(store_url, embedder=HashedWords())
    old = await app.memory.add("Ada lives in Paris", namespace="user:ada")
    await app.memory.supersede(old, "Ada lives in Berlin")
    await app.memory.add("Bob plays trumpet", namespace="team:bob")
    await app.close()
    text = await asyncio.to_thread(_keel, store_url, "namespaces")
    lines = text.splitlines()
    assert lines[0].startswith("team:bob  1 current, 0 superseded  last added 20")
    assert lines[1].startswith("user:ada  1 current, 1 superseded")
    got = json.loads(await asyncio.to_thread(_keel, store_url, "namespaces", "--json"))
    assert [(n["namespace"], n["current"], n["superseded"]) for n in got] == [
        ("team:bob", 1, 0),
        ("user:ada", 1, 1),
    ]
