"""What a scorer reads: `EvalRun`, one case's run as its journal recorded it, and
`Score`, what a scorer says about it."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from keel.errors import ConfigError
from keel.evals.dataset import Case
from keel.types import RunInfo, RunStatus, StepKind, StepRecord, StepStatus


class Score(BaseModel):
    """A scorer's verdict: `value` in [0, 1] (partial credit), whether it passed, why.

    `passed` None means "value is 1". Example: `Score(value=0.5, reason="1 of 2 fields")`
    """

    value: float
    passed: bool | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.passed if self.passed is not None else self.value >= 1.0


@dataclass(frozen=True)
class Call:
    """A tool or model step the run took: its name (`lookup_account`, `llm:classify`),
    kind (`tool` or `llm`) and, for a tool, its arguments."""

    name: str
    kind: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvalRun:
    """One case's run, read from its journal once it finished or stopped waiting.

    Example (a custom scorer):
        async def replied(case: Case, run: EvalRun) -> Score:
            return Score(value=float(any(c.name == "send_reply" for c in run.calls)))
    """

    case: Case
    repeat: int
    info: RunInfo
    steps: list[StepRecord]
    queues: list[str] = field(default_factory=list)  # people queues it was routed to
    latency: float = 0.0  # seconds from start until it settled, the harness's waits included
    app: Any = None  # the eval's App (its gateway and store), for judges

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def status(self) -> RunStatus:
        return self.info.status

    @property
    def result(self) -> Any:
        """The run's result as JSON (None unless it succeeded)."""
        return self.info.result

    @property
    def calls(self) -> list[Call]:
        """The tool and model steps actually taken (completed or failed), in order."""
        return [
            Call(s.name, s.kind.value, s.input if isinstance(s.input, dict) else {})
            for s in self.steps
            if s.kind in (StepKind.TOOL, StepKind.LLM) and s.status is not StepStatus.PENDING
        ]

    @property
    def markers(self) -> list[str]:
        """The route the run took: the names of its steps in journal order (not those
        still pending, e.g. a tool waiting for its approval), then `queue:<q>` for each
        people queue (approval, review, escalation) it was routed to."""
        taken = [s.name for s in self.steps if s.status is not StepStatus.PENDING]
        return taken + [f"queue:{q}" for q in self.queues]

    @property
    def cost_usd(self) -> float:
        return sum(float(_usage(s).get("cost_usd") or 0.0) for s in self.steps)

    @property
    def tokens(self) -> int:
        total = 0
        for s in self.steps:
            usage = _usage(s).get("usage") or {}
            total += int(usage.get("input_tokens") or 0) + int(usage.get("output_tokens") or 0)
        return total


def _usage(step: StepRecord) -> dict[str, Any]:
    """A model step's journaled response (cost and token usage live in it)."""
    out = step.output
    return out if step.kind is StepKind.LLM and isinstance(out, dict) else {}


ScorerFn = Callable[[Case, EvalRun], Awaitable[Any]]


@dataclass(frozen=True)
class Scorer:
    """A named scorer: any `async def scorer(case, run) -> Score` (a float or bool is
    taken as the value). The built-in ones (`fields`, `trajectory`, ...) make these."""

    name: str
    fn: ScorerFn

    async def __call__(self, case: Case, run: EvalRun) -> Score:
        got = await self.fn(case, run)
        if isinstance(got, Score):
            return got
        if isinstance(got, bool):
            return Score(value=float(got))
        if isinstance(got, int | float):
            return Score(value=float(got))
        raise ConfigError(
            f"scorer {self.name!r} returned {type(got).__name__}; return a keel.evals.Score"
            " (or a float in [0, 1], or a bool)"
        )


def as_scorer(obj: Any) -> Scorer:
    """`obj` as a `Scorer`: one already, or an async function (named after it)."""
    if isinstance(obj, Scorer):
        return obj
    if callable(obj) and inspect.iscoroutinefunction(obj):
        return Scorer(getattr(obj, "__name__", "scorer"), obj)
    raise ConfigError(
        f"{obj!r} is not a scorer: pass keel.evals.fields(...), trajectory(...), ..., or an"
        " `async def scorer(case, run) -> keel.evals.Score`"
    )
