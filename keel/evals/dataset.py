"""Eval datasets: cases `{"id", "input", "expected", "tags"}` from a JSONL file or a list.

`keel review export` output loads as it is: its `case: "negative"` rows (a run marked
incorrect with no right answer given) become cases whose `rejected` output must not be
produced again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from keel.errors import ConfigError


class Case(BaseModel):
    """One eval case: the workflow's input and what a right run does.

    Example:
        Case(id="T-1", input={"ticket": {...}}, expected={"category": "billing"},
             tags=["billing"])
    """

    id: str
    input: dict[str, Any] = Field(default_factory=dict)
    expected: Any = None
    tags: list[str] = Field(default_factory=list)
    rejected: Any = None  # a negative case's output that must not come back


def _from_row(row: Any, where: str) -> Case:
    if not isinstance(row, Mapping):
        raise ConfigError(f"{where}: a case is a JSON object, got {type(row).__name__}")
    if "id" not in row:
        raise ConfigError(f'{where}: a case needs an "id" (cases are matched by id)')
    data = dict(row)
    if data.get("case") == "negative" or data.get("rejected_output") is not None:
        data["rejected"] = data.get("rejected_output")  # `keel review export` row
        tags = list(data.get("tags") or [])
        data["tags"] = tags if "negative" in tags else [*tags, "negative"]
    data["id"] = str(data["id"])
    try:
        return Case.model_validate({k: v for k, v in data.items() if k in Case.model_fields})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise ConfigError(f"{where} (case {data['id']!r}): {problems}") from None


def load_dataset(source: str | Path | Iterable[Any]) -> list[Case]:
    """Cases from a JSONL file (one object per line) or a list of dicts or `Case`s.

    Refuses, naming the line or position: a row that is not an object, a case with no
    id, and two cases with one id (a paired comparison matches cases by id).

    Example:
        cases = load_dataset("examples/data/triage_cases.jsonl")
    """
    cases: list[Case] = []
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"no dataset file {str(path)!r}: give a JSONL file or a list")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{where}: not JSON ({exc.msg}); one case per line") from None
            cases.append(_from_row(row, where))
    else:
        for n, row in enumerate(source):
            cases.append(row if isinstance(row, Case) else _from_row(row, f"case #{n}"))
    seen: set[str] = set()
    for case in cases:
        if case.id in seen:
            raise ConfigError(f"dataset has two cases with id {case.id!r}; ids must be unique")
        seen.add(case.id)
    if not cases:
        raise ConfigError("the dataset has no cases")
    return cases
