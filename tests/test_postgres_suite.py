"""tests/postgres_suite.txt names every test file: to run on Postgres too, or why not."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_test_file_is_run_on_postgres_or_says_why_not() -> None:
    listed: dict[str, str] = {}
    for line in (ROOT / "tests/postgres_suite.txt").read_text().splitlines():
        if line.startswith("tests/"):
            listed[line] = "run"
        elif line.startswith("# not: "):
            name, _, why = line.removeprefix("# not: ").partition(": ")
            assert why.strip(), f"{name}: say why it does not run on Postgres"
            listed[name] = "not"
    files = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")}
    assert sorted(files - set(listed)) == [], "add them to tests/postgres_suite.txt"
    assert sorted(set(listed) - files) == [], "listed in tests/postgres_suite.txt, gone"
