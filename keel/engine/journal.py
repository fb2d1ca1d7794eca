"""A run's journal in memory: lookup by key and position, non-determinism checks."""

from __future__ import annotations

from dataclasses import dataclass, field

from keel.engine.state import StateTracker
from keel.errors import NonDeterminismError
from keel.types import StepRecord

# Moved to keel.types (stores compute RunInfo.degraded with them); kept importable here.
from keel.types import live_degraded as live_degraded
from keel.types import superseded_attempts as superseded_attempts


@dataclass(slots=True)
class Scope:
    """A branch of the journal: the root, a map item or a gather branch.

    Keys are the scope's path + step name + a per-name sequence number, so
    they do not depend on completion order.
    """

    path: str
    state: StateTracker | None = None
    position: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    phase: str | None = None  # the enclosing ctx.phase, for escalation packets
    phase_prefix: str | None = None  # its journal prefix

    def next(self, name: str) -> tuple[str, int]:
        n = self.counts.get(name, 0)
        self.counts[name] = n + 1
        pos = self.position
        self.position = pos + 1
        return f"{self.path}{name}#{n}", pos

    def child(self, key: str, state: StateTracker | None) -> Scope:
        return Scope(path=f"{key}/", state=state, phase=self.phase, phase_prefix=self.phase_prefix)


class Journal:
    """Recorded steps of one run, checked against what replay reaches.

    It also tracks which recorded steps replay has reached, so a run cannot finish
    while steps it recorded earlier (whose effects happened) were silently dropped.
    """

    __slots__ = ("_covered", "_unreached", "by_key", "by_pos", "run_id")

    def __init__(self, run_id: str, records: list[StepRecord]) -> None:
        self.run_id = run_id
        self.by_key: dict[str, StepRecord] = {}
        self.by_pos: dict[tuple[str, int], StepRecord] = {}
        for r in records:
            self.add(r)
        # keys recorded by earlier executions that replay has not reached yet
        self._unreached: set[str] = set(self.by_key)
        # replayed steps whose recorded result stood in for their body: what the body
        # recorded below them (`<key>/...`) is reached with them
        self._covered: set[str] = set()

    def add(self, rec: StepRecord) -> None:
        self.by_key[rec.key] = rec
        self.by_pos[(rec.scope, rec.position)] = rec

    def reached(self, key: str) -> None:
        """Replay got to the recorded step `key` (read outside `check`)."""
        self._unreached.discard(key)

    def cover(self, key: str) -> None:
        """Step `key` returned its recorded result: its body and what it recorded are done."""
        if self._unreached:
            self._unreached.discard(key)
            self._covered.add(key)

    def unreached(self) -> list[StepRecord]:
        """Steps recorded earlier that replay never reached, in the order they ran."""
        covered = self._covered
        out = []
        for key in self._unreached:
            cut = key.find("/")
            while cut != -1 and key[:cut] not in covered:
                cut = key.find("/", cut + 1)
            if cut == -1:
                out.append(self.by_key[key])
        return sorted(out, key=lambda r: (r.started_at, r.key))

    def __len__(self) -> int:
        return len(self.by_key)

    def check(self, scope: str, position: int, key: str, digest: str) -> StepRecord | None:
        """The recorded step for `key`, or None; raise if replay diverged from the journal."""
        if not self.by_key:
            return None
        at_pos = self.by_pos.get((scope, position))
        if at_pos is not None and at_pos.key != key:
            raise NonDeterminismError(
                f"run {self.run_id}: replay reached step {key!r} where the journal recorded "
                f"{at_pos.key!r} (position {position} in scope {scope or 'root'!r}). The workflow "
                "code changed or is not deterministic; finish old runs on the old code, or "
                "version the workflow under a new name.",
                run_id=self.run_id,
                recorded=at_pos.key,
                new=key,
                step=key,
            )
        rec = self.by_key.get(key)
        if rec is None:
            return None
        self._unreached.discard(key)
        if rec.position != position:
            raise NonDeterminismError(
                f"run {self.run_id}: step {key!r} was recorded at position {rec.position} "
                f"but replay reached it at position {position}",
                run_id=self.run_id,
                recorded=key,
                new=key,
                step=key,
            )
        if rec.digest != digest:
            raise NonDeterminismError(
                f"run {self.run_id}: step {key!r} was recorded with input digest {rec.digest} "
                f"but replay called it with different arguments (digest {digest}). The recorded "
                f"step and the new one are both {key!r}; their inputs differ.",
                run_id=self.run_id,
                recorded=key,
                new=key,
                step=key,
                recorded_digest=rec.digest,
                new_digest=digest,
            )
        return rec
