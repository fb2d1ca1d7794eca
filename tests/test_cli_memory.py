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
