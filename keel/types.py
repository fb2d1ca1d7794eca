"""Core records shared by every layer: run statuses, step records, structured errors."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")


class RunStatus(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    WAITING = "WAITING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


class StepKind(enum.StrEnum):
    TOOL = "tool"
    MAP = "map"
    GATHER = "gather"
    CHILD = "child"
    SLEEP = "sleep"
    SIGNAL = "signal"
    VALUE = "value"  # now / uuid / random
    PHASE = "phase"
    LLM = "llm"
    REVIEW = "review"  # a person's decision: approval, low confidence, novelty
    MEMORY = "memory"  # a long-term memory read or write (ctx.memory)
    SESSION = "session"  # a session state read or write (ctx.session)


class StepStatus(enum.StrEnum):
    PENDING = "pending"  # a durable timer or wait that has started
    OK = "ok"
    ERROR = "error"


class StructuredError(BaseModel):
    """A JSON error that downstream systems can read: type, message, step, cause chain."""

    type: str
    message: str
    types: list[str] = Field(default_factory=list)
    step: str | None = None
    attempts: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    fallback: str | None = None  # degrade / human / fail, when one was taken
    cause: StructuredError | None = None


class StepRecord(BaseModel):
    """One journal entry."""

    run_id: str
    key: str
    scope: str
    position: int
    kind: StepKind
    name: str
    digest: str
    status: StepStatus
    output: Any = None  # decoded JSON (None when absent)
    error: StructuredError | None = None
    attempts: int = 1
    started_at: float
    ended_at: float | None = None
    wake_at: float | None = None
    state_delta: dict[str, Any] | None = None
    blob: str | None = None  # digest of an out-of-line output
    fallback: str | None = None  # the fallback this step took after failing for good
    input: Any = None  # a tool step's arguments (what the call was asked to do)
    attempt_log: list[dict[str, Any]] | None = None  # failed attempts: start, end, error


class RunInfo(BaseModel):
    """A run as the store knows it."""

    id: str
    workflow: str
    status: RunStatus
    input: dict[str, Any]
    result: Any = None
    error: StructuredError | None = None
    state: dict[str, Any] | None = None
    created_at: float
    updated_at: float
    ended_at: float | None = None
    wake_at: float | None = None
    waiting_on: list[str] = Field(default_factory=list)
    attempts: int = 0
    lease_owner: str | None = None
    degraded: list[str] = Field(default_factory=list)  # steps that fell back to a default
    tenant: str | None = None
    session: str | None = None  # its session (ctx.session); its own id when started without

    def summary(self) -> dict[str, Any]:
        """The `--json` shape: id, workflow, status, result, error and times."""
        return {
            "id": self.id,
            "workflow": self.workflow,
            "session": self.session,
            "status": self.status.value,
            "result": self.result,
            "error": self.error.model_dump(exclude_none=True) if self.error else None,
            "created_at": _iso(self.created_at),
            "ended_at": _iso(self.ended_at) if self.ended_at else None,
            "waiting_on": self.waiting_on or None,
            "degraded": self.degraded or None,
            "wake_at": _iso(self.wake_at) if self.wake_at else None,
        }


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


class ItemFailure(BaseModel):
    """A failed map or gather item: its input index and structured error."""

    index: int
    error: StructuredError


class MapResult(BaseModel, Generic[T]):
    """Per-item outcome of `ctx.map` / `ctx.gather`, in input order.

    Example:
        res = await ctx.map(summarise, docs, require=keel.AtLeast(0.9))
        summaries = res.ok            # successful values, input order
        for f in res.failed: log(f.index, f.error.message)
    """

    values: list[T | None]
    failed: list[ItemFailure] = Field(default_factory=list)

    @property
    def ok(self) -> list[T]:
        bad = {f.index for f in self.failed}
        return [v for i, v in enumerate(self.values) if i not in bad]  # type: ignore[misc]

    @property
    def succeeded(self) -> int:
        return len(self.values) - len(self.failed)

    def __iter__(self) -> Iterator[T | None]:  # type: ignore[override]
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index: int) -> T | None:
        return self.values[index]


class EscalationPacket(BaseModel):
    """Everything a person needs to resolve a failure: what was tried, what happened, why."""

    workflow: str
    run_id: str
    step: str
    phase: str | None = None
    tool: str | None = None
    input: Any = None  # the step's arguments (args / kwargs)
    journal: list[dict[str, Any]] = Field(default_factory=list)  # what the phase did so far
    output: Any = None  # the rejected output, for validation failures
    reason: str  # one line: why this needs a person
    error: StructuredError | None = None
    messages: list[str] = Field(default_factory=list)  # validation / checkpoint messages
    state: dict[str, Any] | None = None
    # JSON schema a resolution must fit (the tool's return type, or the state for a
    # phase), so it is checked even where the workflow's code is not loaded (CLI, console).
    result_schema: dict[str, Any] | None = None
    # A phase's checks as `module:qualname`: where that code is loaded, a resolution
    # must pass them before it is accepted (the run checks again when it resumes).
    checks: list[str] = Field(default_factory=list)


class Escalation(BaseModel):
    """A durable request for a person to resolve a failed tool or phase."""

    id: str
    run_id: str
    workflow: str
    queue: str
    kind: str  # "tool" or "phase"
    step: str
    status: str = "open"  # open / resolved / rejected
    packet: EscalationPacket
    resolution: dict[str, Any] | None = None
    created_at: float
    resolved_at: float | None = None
    resolved_by: str | None = None


class ReviewRequest(BaseModel):
    """One request for a person: an approval, a low-confidence or novelty review, a sample."""

    id: str
    kind: str
    run_id: str
    workflow: str
    step: str | None = None
    queue: str
    status: str
    request: dict[str, Any]
    decision: dict[str, Any] | None = None
    deadline: float | None = None
    created_at: float
    decided_at: float | None = None
    decided_by: str | None = None

    @property
    def tool(self) -> str | None:
        action = self.request.get("action")
        return action.get("tool") if isinstance(action, dict) else None

    @property
    def args(self) -> dict[str, Any] | None:
        action = self.request.get("action")
        return action.get("args") if isinstance(action, dict) else None

    @property
    def reason(self) -> str | None:
        """Why it was routed to a person: "refund is irreversible: a person must approve it"."""
        reason = self.request.get("reason")
        return None if reason is None else str(reason)

    def summary(self) -> dict[str, Any]:
        """The `--json` shape: id, run_id, queue, status, tool, args and the rest."""
        return {
            "id": self.id,
            "kind": self.kind,
            "run_id": self.run_id,
            "workflow": self.workflow,
            "queue": self.queue,
            "status": self.status,
            "tool": self.tool,
            "args": self.args,
            "reason": self.reason,
            "deadline": self.deadline,
            "created_at": self.created_at,
            "decided_by": self.decided_by,
            "decision": self.decision,
        }


def superseded_attempts(phase_attempts: list[str], keys: list[str]) -> list[str]:
    """Prefixes (`<phase key>/<n>/`) of phase attempts that a later attempt replaced.

    `phase_attempts` are keys of phase-attempt outcome records (`<phase key>/<n>`);
    `keys` may add any other keys, so an attempt in progress also counts as later.
    Here, not in the engine, because stores compute `RunInfo.degraded` with it.

    Example:
        superseded_attempts(["p/1", "p/2"], [])  # ["p/1/"]
    """
    latest: dict[str, int] = {}
    tried: dict[str, set[int]] = {}
    for key in phase_attempts:
        phase, _, n = key.rpartition("/")
        if phase and n.isdigit():
            tried.setdefault(phase, set()).add(int(n))
            latest[phase] = max(latest.get(phase, 0), int(n))
    for key in keys:
        for phase in tried:
            if key.startswith(phase + "/"):
                n = key[len(phase) + 1 :].split("/", 1)[0]
                if n.isdigit():
                    latest[phase] = max(latest[phase], int(n))
    return [f"{p}/{n}/" for p, ns in tried.items() for n in ns if n < latest[p]]


def live_degraded(degraded: list[str], superseded: list[str]) -> list[str]:
    """Degraded step keys, without those in phase attempts that were thrown away.

    Example:
        live_degraded(["p/1/a", "p/2/a"], ["p/1/"])  # ["p/2/a"]
    """
    return sorted(k for k in degraded if not any(k.startswith(p) for p in superseded))
