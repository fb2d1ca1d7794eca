"""What a drift monitor reads of a finished run: its result and typed state, its model
calls (structured answers with their confidence, usage and cost) from the journal, and
the decisions people made on its approvals. Loaded once per run, only the parts some
monitor needs."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keel.types import ReviewRequest, RunInfo, StepKind, StepRecord, StepStatus

if TYPE_CHECKING:
    from keel.store import Store

MISSING: Any = object()  # a path that leads nowhere (None is a value)


@dataclass
class RunFacts:
    """One finished run and, when asked for, its journal and its reviews.

    Example:
        facts = await RunFacts.load(app.store, "run-1", needs={"steps"})
        facts.value("category")  # from the result, else the state
    """

    run: RunInfo
    steps: list[StepRecord] = field(default_factory=list)
    reviews: list[ReviewRequest] = field(default_factory=list)

    @classmethod
    async def load(cls, store: Store, run_id: str, needs: set[str]) -> RunFacts | None:
        run = await store.get_run(run_id)
        if run is None:
            return None
        steps = await store.load_steps(run_id) if "steps" in needs else []
        reviews = await store.list_reviews(run_id=run_id, limit=1000) if "reviews" in needs else []
        return cls(run, steps, reviews)

    def value(self, path: str) -> Any:
        """`path` ("category", "label.score", "items.0.name") in the result, else in the
        typed state; "result.x" or "state.x" names the place. MISSING when neither has it."""
        head, _, rest = path.partition(".")
        if head in ("result", "state") and rest:
            return lookup(self.run.result if head == "result" else self.run.state, rest)
        found = lookup(self.run.result, path)
        return found if found is not MISSING else lookup(self.run.state, path)

    def answers(self) -> list[tuple[StepRecord, Any]]:
        """Each model call's answer parsed as JSON (a structured output), in order."""
        out = []
        for step in self.steps:
            if step.kind is not StepKind.LLM or step.status is not StepStatus.OK:
                continue
            resp = step.output if isinstance(step.output, dict) else {}
            text = _answer_text(resp)
            try:
                out.append((step, json.loads(text) if text else MISSING))
            except ValueError:
                out.append((step, MISSING))
        return out

    def usage(self) -> dict[str, float]:
        """Model usage summed over the run's calls, and the run's duration."""
        cost = tokens_in = tokens_out = calls = 0.0
        for step in self.steps:
            if step.kind is StepKind.LLM and isinstance(step.output, dict):
                calls += 1
                cost += float(step.output.get("cost_usd") or 0.0)
                use = step.output.get("usage") or {}
                tokens_in += float(use.get("input_tokens") or 0)
                tokens_out += float(use.get("output_tokens") or 0)
        ended = self.run.ended_at or self.run.updated_at
        return {
            "cost_usd": cost,
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "tokens": tokens_in + tokens_out,
            "llm_calls": calls,
            "duration_s": max(0.0, ended - self.run.created_at),
        }


def lookup(data: Any, path: str) -> Any:
    """The value at dotted `path` in JSON `data` (list items by index), else MISSING."""
    for part in path.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return MISSING
    return data


def field_confidence(facts: RunFacts, path: str) -> float | None:
    """The confidence of the latest structured answer that has `path`: the geometric-mean
    token probability when the call returned logprobs (keel.llm.structured), else the
    share of its self-consistency samples that agree with it on this field. None when no
    answer has the field or no confidence can be told."""
    answers = facts.answers()
    for i in range(len(answers) - 1, -1, -1):
        step, answer = answers[i]
        if step.name.endswith(".sample"):
            continue
        mine = lookup(answer, path) if answer is not MISSING else MISSING
        if mine is MISSING:
            continue
        logprobs = step.output.get("logprobs") if isinstance(step.output, dict) else None
        if logprobs:
            return math.exp(sum(logprobs) / len(logprobs))
        samples = [a for s, a in answers[i + 1 :] if s.name == f"{step.name}.sample"]
        if not samples:
            return None
        agree = sum(1 for a in samples if a is not MISSING and lookup(a, path) == mine)
        return (1 + agree) / (1 + len(samples))
    return None


def _answer_text(resp: dict[str, Any]) -> str:
    calls = resp.get("tool_calls") or []
    if calls and isinstance(calls[0], dict):
        return str(calls[0].get("arguments") or "")
    content = resp.get("content")
    return content.strip() if isinstance(content, str) else ""
