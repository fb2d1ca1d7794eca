"""`keel memory` as real processes with the real local embedder: add, search (with a
threshold that empties the result), list with superseded facts, supersede, forget,
extraction statuses, and clear one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_cli_users import Keel, _one_line_error


@pytest.fixture
def cli(tmp_path: Path) -> Keel:
    return Keel(tmp_path)


def _ok(cli: Keel, *args: str) -> str:
    res = cli("memory", *args)
    assert res.returncode == 0, (res.stdout, res.stderr)
    assert "Loading weights" not in res.stderr  # no progress bar on a user's terminal
    return res.stdout


def test_add_search_supersede_list_forget(cli: Keel) -> None:
    tea = _ok(cli, "add", "Ada prefers green tea", "-n", "user:ada", "-m", '{"topic": "drinks"}')
    tea = tea.strip()
    _ok(cli, "add", "Ada's dog is called Biscuit", "-n", "user:ada")
    hits = json.loads(
        _ok(cli, "search", "what does Ada like to drink?", "-n", "user:ada", "--json")
    )
    assert hits[0]["id"] == tea and hits[0]["metadata"] == {"topic": "drinks"}
    assert 0 <= hits[-1]["score"] <= hits[0]["score"] <= 1

    none = cli(
        "memory",
        "search",
        "quarterly tax filing deadline",
        "-n",
        "user:ada",
        "--min-relevance",
        "0.9",
    )
    assert none.returncode == 1 and "no memory is relevant enough" in none.stdout

    coffee = json.loads(_ok(cli, "supersede", tea, "Ada now drinks coffee", "--json"))
    assert coffee["supersedes"] == tea
    current = json.loads(_ok(cli, "list", "-n", "user:ada", "--json"))
    assert [r["text"] for r in current] == ["Ada's dog is called Biscuit", "Ada now drinks coffee"]
    every = json.loads(_ok(cli, "list", "-n", "user:ada", "--all", "--json"))
    closed = next(r for r in every if r["id"] == tea)
    assert closed["valid_to"] and closed["superseded_by"] == coffee["id"]

    assert json.loads(_ok(cli, "forget", coffee["id"], "--json")) == {"forgot": coffee["id"]}
    gone = cli("memory", "forget", coffee["id"])
    _one_line_error(gone, "no memory has id")


def test_bad_input_is_one_clear_line_and_writes_nothing(cli: Keel) -> None:
    _one_line_error(cli("memory", "add", "   "), "empty or only whitespace")
    _one_line_error(cli("memory", "add", "x", "-m", "[1"), "--metadata")
    _one_line_error(cli("memory", "search", "tea", "--as-of", "yesterday"), "not an ISO time")
    listed = cli("memory", "list")
    assert listed.returncode == 0 and "holds no memories" in listed.stdout
    res = cli("memory", "extracts", "no-such-run")
    assert res.returncode == 1 and "no extracted items" in res.stderr


def test_namespaces_lists_counts_in_name_order(store_url: str) -> None:
    """In process, on the test's backend; the hashed-words embedder: no retrieval here."""
    import asyncio

    from typer.testing import CliRunner

    import keel
    from keel.cli import cli as keel_cli
    from tests.memory_embedders import HashedWords

    def run(*args: str) -> str:
        env = {"KEEL_STORE": store_url, "COLUMNS": "200", "NO_COLOR": "1"}
        res = CliRunner().invoke(keel_cli, ["memory", *args], env=env)
        assert res.exit_code == 0, res.output
        return res.stdout

    assert "no memories in this store yet" in run("namespaces")

    async def fill() -> None:
        app = keel.App(store_url, embedder=HashedWords())
        old = await app.memory.add("Ada lives in Paris", namespace="user:ada")
        await app.memory.supersede(old, "Ada lives in Berlin")
        await app.memory.add("Bob plays trumpet", namespace="team:bob")
        await app.close()

    asyncio.run(fill())
    lines = run("namespaces").splitlines()
    assert lines[0].startswith("team:bob  1 current, 0 superseded  last added 20")
    assert lines[1].startswith("user:ada  1 current, 1 superseded")
    got = json.loads(run("namespaces", "--json"))
    assert [(n["namespace"], n["current"], n["superseded"]) for n in got] == [
        ("team:bob", 1, 0),
        ("user:ada", 1, 1),
    ]
