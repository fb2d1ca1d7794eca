"""Fault injection for the recovery tests: tools that fail the way real APIs do.

A `Faults` recorder registers tools on an App whose every attempt follows a *plan*:

    faults = Faults()
    flaky = faults.tool(app, "flaky", Schedule("503", "429", "ok"), retry=keel.Retry(...))
    always = faults.tool(app, "down", Always("503"))
    noisy = faults.tool(app, "noisy", Seeded(rate=0.3, seed=7, kinds=("500", "timeout")))

Outcomes (one per attempt, chosen by the attempt's number so a plan is the same
after a crash or a replay):

    "ok"          return `result(*args)` (the input echoed back by default)
    "slow"        the same, after sleeping `slow` seconds
    "500".."599"  raise HTTPStatusError with that status
    "408", "400", "401", "404", ...  likewise (retryable or not by Keel's default rules)
    "429"         raise HTTPStatusError(429) with `Retry-After: <retry_after>` seconds
    "429-date"    likewise with an HTTP-date Retry-After
    "timeout"     sleep `hang` seconds, past the tool's per-attempt `timeout=`
    "raise-timeout"  raise TimeoutError directly
    "conn"        raise ConnectionError (caused by ConnectionResetError)
    "malformed"   return `malformed(*args)` (well-formed JSON, wrong shape)
    "value"       raise ValueError (a bug, not a transient fault)

Every attempt is recorded (tool, step key, attempt number, wall-clock start, outcome,
the validation feedback it was handed), in memory and, with `log=`, appended to a
file as one JSON line (one O_APPEND write) so a test can read what worker
subprocesses did, even across a SIGKILL.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keel


class HTTPStatusError(Exception):
    """What an HTTP client raises for an error status (shaped like httpx's)."""

    def __init__(self, status: int, retry_after: str | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status_code = status
        self.headers: dict[str, str] = {}
        if retry_after is not None:
            self.headers["Retry-After"] = retry_after


@dataclass(frozen=True)
class Attempt:
    tool: str
    key: str  # the step's key (without the run id)
    run_id: str
    attempt: int  # keel.current_step().attempt
    at: float  # time.time() when the attempt started
    outcome: str
    feedback: tuple[str, ...] = ()
    pid: int = 0
    args: tuple[Any, ...] = ()


class Plan:
    """Decides each attempt's outcome from (step key, attempt number)."""

    def outcome(self, key: str, attempt: int) -> str:
        raise NotImplementedError


class Schedule(Plan):
    """Fixed outcomes for attempts 1, 2, ...; every later attempt gets `then`."""

    def __init__(self, *outcomes: str, then: str = "ok") -> None:
        self.outcomes = outcomes
        self.then = then

    def outcome(self, key: str, attempt: int) -> str:
        return self.outcomes[attempt - 1] if attempt <= len(self.outcomes) else self.then


class Always(Schedule):
    """The same outcome for every attempt."""

    def __init__(self, outcome: str) -> None:
        super().__init__(then=outcome)


class Calls(Plan):
    """Outcomes in the order attempts reach the tool, whatever the step (in-process only:
    breaker tests want "the 4th attempt anywhere succeeds"); then `then`."""

    def __init__(self, *outcomes: str, then: str = "ok") -> None:
        self.outcomes = list(outcomes)
        self.then = then
        self.seen = 0

    def outcome(self, key: str, attempt: int) -> str:
        self.seen += 1
        return self.outcomes[self.seen - 1] if self.seen <= len(self.outcomes) else self.then


class Seeded(Plan):
    """Each attempt fails with probability `rate` (a seeded draw per key and attempt),
    with a fault drawn from `kinds`; the same seed gives the same faults."""

    def __init__(self, rate: float, seed: int, kinds: Sequence[str] = ("500",)) -> None:
        self.rate = rate
        self.seed = seed
        self.kinds = tuple(kinds)

    def outcome(self, key: str, attempt: int) -> str:
        rng = random.Random(f"{self.seed}/{key}/{attempt}")
        if rng.random() < self.rate:
            return rng.choice(self.kinds)
        return "ok"

    def attempts_needed(self, key: str, limit: int = 1000) -> int:
        """How many attempts step `key` takes to succeed under this plan."""
        for n in range(1, limit + 1):
            if self.outcome(key, n) == "ok":
                return n
        raise AssertionError(f"{key} never succeeds within {limit} attempts")


class Faults:
    """Registers fault-injecting tools and records every attempt they see."""

    def __init__(
        self,
        log: str | Path | None = None,
        *,
        retry_after: float = 0.2,
        hang: float = 30.0,
        slow: float = 0.1,
    ) -> None:
        self.log = Path(log) if log is not None else None
        self.retry_after = retry_after
        self.hang = hang
        self.slow = slow
        self.attempts: list[Attempt] = []

    # -- tools --------------------------------------------------------------------

    def tool(
        self,
        app: keel.App,
        name: str,
        plan: Plan,
        *,
        result: Callable[..., Any] | None = None,
        malformed: Callable[..., Any] | None = None,
        returns: Any = Any,
        **options: Any,
    ) -> Any:
        """Register tool `name` on `app` (with `options` for `@app.tool`) following `plan`."""
        faults = self

        async def body(*args: Any) -> Any:
            info = keel.current_step()
            assert info is not None, "fault tools run as journaled steps"
            key = info.key
            outcome = plan.outcome(key, info.attempt)
            faults._record(
                Attempt(
                    tool=name,
                    key=key,
                    run_id=info.run_id,
                    attempt=info.attempt,
                    at=time.time(),
                    outcome=outcome,
                    feedback=tuple(info.feedback),
                    pid=os.getpid(),
                    args=args,
                )
            )
            return await faults._act(outcome, args, result, malformed)

        body.__name__ = name
        body.__qualname__ = name
        body.__annotations__ = {"return": returns}
        return app.tool(name=name, **options)(body)

    async def _act(
        self,
        outcome: str,
        args: tuple[Any, ...],
        result: Callable[..., Any] | None,
        malformed: Callable[..., Any] | None,
    ) -> Any:
        if outcome == "slow":  # succeeds, after `slow` seconds
            await asyncio.sleep(self.slow)
            outcome = "ok"
        if outcome == "ok":
            return result(*args) if result is not None else (args[0] if args else None)
        if outcome == "malformed":
            return malformed(*args) if malformed is not None else {"unexpected": True}
        if outcome == "429":
            raise HTTPStatusError(429, retry_after=str(self.retry_after))
        if outcome == "429-date":
            when = email.utils.formatdate(time.time() + self.retry_after, usegmt=True)
            raise HTTPStatusError(429, retry_after=when)
        if outcome.isdigit():
            raise HTTPStatusError(int(outcome))
        if outcome == "timeout":
            await asyncio.sleep(self.hang)  # the tool's timeout= cuts this short
            return None
        if outcome == "raise-timeout":
            raise TimeoutError("upstream timed out")
        if outcome == "conn":
            try:
                raise ConnectionResetError("connection reset by peer")
            except ConnectionResetError as reset:
                raise ConnectionError("cannot reach api.example.com") from reset
        if outcome == "value":
            raise ValueError("the tool has a bug")
        raise AssertionError(f"unknown fault outcome {outcome!r}")

    # -- records ------------------------------------------------------------------

    def _record(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)
        if self.log is not None:
            data = {**asdict(attempt), "feedback": list(attempt.feedback)}
            data["args"] = list(attempt.args)
            line = json.dumps(data, default=str) + "\n"
            fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)

    def of(self, tool: str | None = None, key: str | None = None) -> list[Attempt]:
        """Recorded attempts (this process), filtered by tool name and/or step key."""
        return [
            a
            for a in self.attempts
            if (tool is None or a.tool == tool) and (key is None or a.key == key)
        ]

    def count(self, tool: str | None = None, key: str | None = None) -> int:
        return len(self.of(tool, key))

    def per_key(self, tool: str | None = None) -> Counter[str]:
        return Counter(a.key for a in self.of(tool))

    def times(self, tool: str | None = None, key: str | None = None) -> list[float]:
        return [a.at for a in self.of(tool, key)]


def read_log(path: str | Path) -> list[Attempt]:
    """The attempts a `Faults(log=path)` recorded, across processes, in write order."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        data = json.loads(line)
        data["feedback"] = tuple(data["feedback"])
        data["args"] = tuple(data.get("args", ()))
        out.append(Attempt(**data))
    return out
