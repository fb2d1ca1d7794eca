"""Drift monitors declared on a workflow (`@app.workflow(monitors=[...])`): what each
reads of a finished run, and how it judges a recent window against a reference window.

- `Distribution(path)`: a category from the result or state; alert when PSI >= threshold
  (0.2) and the chi-square test's p < alpha (0.01).
- `Confidence(path)`: the confidence of the latest model answer carrying that field;
  alert when its least-squares decline per 100 runs >= threshold (0.01) and p < alpha
  (0.001).
- `ApprovalRate()`: the share of the run's approvals approved unchanged (or whether a
  result/state field says approved); alert when the rate dropped by >= threshold (0.1)
  and the one-sided two-proportion p < alpha (0.0001).
- `Metric(name)`: cost, tokens, duration, or a number in the result or state; alert when
  the rank-biserial effect size >= threshold (0.2) and Mann-Whitney's p < alpha (0.001).

A window holds too few observations (`min_sample`): `insufficient`, never an alert.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

from keel.drift import stats
from keel.drift.facts import MISSING, RunFacts, field_confidence
from keel.errors import ConfigError
from keel.store.drift import DriftValue

OK, ALERT, INSUFFICIENT = "ok", "alert", "insufficient"


@dataclass(frozen=True)
class Rolling:
    """The reference is the `size` observations just before the recent window.

    Example:
        keel.drift.Distribution("category", reference=keel.drift.Rolling(1000))
    """

    size: int = 500

    def spec(self) -> dict[str, Any]:
        return {"rolling": self.size}

    def describe(self) -> str:
        return f"the {self.size} before"


@dataclass(frozen=True)
class Pinned:
    """The reference is what was observed from `start` to `end` (epoch seconds; None:
    open), at most `limit` observations (the newest of them).

    Example:
        keel.drift.Metric("cost_usd", reference=keel.drift.Pinned(start=t0, end=t0 + 7 * 86400))
    """

    start: float | None = None
    end: float | None = None
    limit: int = 5000

    def spec(self) -> dict[str, Any]:
        return {"pinned": [self.start, self.end, self.limit]}

    def describe(self) -> str:
        return f"pinned [{self.start}, {self.end})"


@dataclass(frozen=True)
class Judgement:
    """A monitor's verdict on its windows: `status` is ok, alert or insufficient."""

    status: str
    statistic: float | None
    threshold: float
    p_value: float | None = None
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Monitor:
    """What every monitor has: the recent `window` (newest observations), the
    `reference` (Rolling or Pinned), `min_sample` in each window, the effect `threshold`
    and significance `alpha`, and a `name` (default: kind and path)."""

    kind: ClassVar[str] = ""
    reads: ClassVar[frozenset[str]] = frozenset()  # what RunFacts.load must fetch
    default_threshold: ClassVar[float] = 0.0
    default_alpha: ClassVar[float] = 0.001

    window: int = 100
    reference: Rolling | Pinned = Rolling()
    min_sample: int = 30
    threshold: float | None = None
    alpha: float | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if self.window < 2 or self.min_sample < 2:
            raise ConfigError(
                f"{self.kind} monitor: window ({self.window}) and min_sample"
                f" ({self.min_sample}) must be at least 2"
            )
        if self.min_sample > self.window:
            raise ConfigError(
                f"{self.kind} monitor: min_sample {self.min_sample} is larger than the"
                f" window {self.window}, so it could never judge: lower min_sample or widen"
                " the window"
            )
        if not isinstance(self.reference, Rolling | Pinned):
            raise ConfigError(
                f"{self.kind} monitor: reference= takes keel.drift.Rolling(size) or"
                f" keel.drift.Pinned(start, end), not {self.reference!r}"
            )

    def needs(self) -> frozenset[str]:
        """What of the run this monitor reads besides its result and state."""
        return self.reads

    @property
    def key(self) -> str:
        """The monitor's name in the store, reports and metrics."""
        return self.name or self.kind

    @property
    def limit(self) -> float:
        return self.default_threshold if self.threshold is None else self.threshold

    @property
    def significance(self) -> float:
        return self.default_alpha if self.alpha is None else self.alpha

    def observe(self, facts: RunFacts) -> float | str | None:
        """The run's value for this monitor (None: the run has none)."""
        raise NotImplementedError

    def compare(self, recent: list[DriftValue], reference: list[DriftValue]) -> Judgement:
        raise NotImplementedError

    def judge(self, recent: list[DriftValue], reference: list[DriftValue]) -> Judgement:
        """Compare the windows, or say they are too small to."""
        if len(recent) < self.min_sample or len(reference) < self.min_sample:
            return Judgement(
                INSUFFICIENT,
                None,
                self.limit,
                detail={
                    "needed": self.min_sample,
                    "recent": len(recent),
                    "reference": len(reference),
                },
            )
        return self.compare(recent, reference)

    def spec(self) -> dict[str, Any]:
        """The monitor's settings as JSON (stored, so a report needs no code)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "reference"}
        return {"kind": self.kind, **out, "reference": self.reference.spec()}

    def _verdict(self, effect: float, p: float, detail: dict[str, Any]) -> Judgement:
        alert = effect >= self.limit and p < self.significance
        return Judgement(ALERT if alert else OK, effect, self.limit, p, detail)


def _numbers(values: list[DriftValue]) -> list[float]:
    return [v.value for v in values if v.value is not None]


@dataclass(frozen=True)
class Distribution(Monitor):
    """The mix of a categorical field (a classifier's label), by PSI and chi-square.

    Example:
        @app.workflow(monitors=[keel.drift.Distribution("category")])
    """

    kind: ClassVar[str] = "distribution"
    default_threshold: ClassVar[float] = 0.2
    default_alpha: ClassVar[float] = 0.01
    path: str

    @property
    def key(self) -> str:
        return self.name or f"distribution:{self.path}"

    def observe(self, facts: RunFacts) -> float | str | None:
        found = facts.value(self.path)
        if found is MISSING or found is None or isinstance(found, dict | list):
            return None
        return str(found).lower() if isinstance(found, bool) else str(found)

    def compare(self, recent: list[DriftValue], reference: list[DriftValue]) -> Judgement:
        ref = Counter(v.label for v in reference if v.label is not None)
        new = Counter(v.label for v in recent if v.label is not None)
        index = stats.psi(ref, new)
        test = stats.chi_square(ref, new)
        detail = {
            "chi_square": test.statistic,
            "reference_shares": _shares(ref),
            "recent_shares": _shares(new),
        }
        return self._verdict(index, test.p_value, detail)


@dataclass(frozen=True)
class Confidence(Monitor):
    """The model's confidence in the answers that carry a field, by its trend: the
    least-squares decline per 100 runs over the reference and recent windows together.

    Example:
        @app.workflow(monitors=[keel.drift.Confidence("category")])
    """

    kind: ClassVar[str] = "confidence"
    reads: ClassVar[frozenset[str]] = frozenset({"steps"})
    default_threshold: ClassVar[float] = 0.01
    path: str

    @property
    def key(self) -> str:
        return self.name or f"confidence:{self.path}"

    def observe(self, facts: RunFacts) -> float | str | None:
        return field_confidence(facts, self.path)

    def compare(self, recent: list[DriftValue], reference: list[DriftValue]) -> Judgement:
        ys = _numbers([*reference, *recent])
        line = stats.trend([float(i) for i in range(len(ys))], ys)
        decline = -line.slope * 100
        detail = {
            "slope_per_100": line.slope * 100,
            "reference_mean": _mean(_numbers(reference)),
            "recent_mean": _mean(_numbers(recent)),
        }
        return self._verdict(decline, line.p_value, detail)


@dataclass(frozen=True)
class ApprovalRate(Monitor):
    """How often people approve what the workflow proposes, by a one-sided two-proportion
    test. From the run's decided `review_kind` requests (approved unchanged counts; an
    edit or a rejection does not), or, with `path`, from the result or state: approved
    when the value there equals `approved` (a workflow that takes its decision as a
    signal, e.g. `ApprovalRate(path="status", approved="sent")`).

    Example:
        @app.workflow(monitors=[keel.drift.ApprovalRate()])
    """

    kind: ClassVar[str] = "approval_rate"
    reads: ClassVar[frozenset[str]] = frozenset({"reviews"})
    default_threshold: ClassVar[float] = 0.1
    default_alpha: ClassVar[float] = 0.0001
    review_kind: str = "approval"
    path: str | None = None
    approved: Any = True

    def __post_init__(self) -> None:
        super().__post_init__()
        try:  # stored with the monitor's settings, so `keel drift report` needs no code
            json.dumps(self.approved)
        except (TypeError, ValueError):
            raise ConfigError(
                f"ApprovalRate(approved={self.approved!r}): the approved value must be JSON"
                " (a string, number, boolean or null), as the result or state holds it"
            ) from None

    def needs(self) -> frozenset[str]:
        return frozenset() if self.path else self.reads

    @property
    def key(self) -> str:
        if self.name or (self.review_kind == "approval" and not self.path):
            return self.name or "approval_rate"
        return f"approval_rate:{self.path or self.review_kind}"

    def observe(self, facts: RunFacts) -> float | str | None:
        if self.path:
            found = facts.value(self.path)
            return None if found is MISSING or found is None else float(found == self.approved)
        decided = [r for r in facts.reviews if r.kind == self.review_kind and r.status != "pending"]
        if not decided:
            return None
        approved = sum(1 for r in decided if r.status in ("approved", "confirmed", "correct"))
        return approved / len(decided)

    def compare(self, recent: list[DriftValue], reference: list[DriftValue]) -> Judgement:
        ref, new = _numbers(reference), _numbers(recent)
        test = stats.two_proportions(sum(ref), len(ref), sum(new), len(new), "less")
        drop = (_mean(ref) or 0.0) - (_mean(new) or 0.0)
        detail = {"reference_rate": _mean(ref), "recent_rate": _mean(new), "z": test.statistic}
        return self._verdict(drop, test.p_value, detail)


USAGE = ("cost_usd", "input_tokens", "output_tokens", "tokens", "llm_calls", "duration_s")


@dataclass(frozen=True)
class Metric(Monitor):
    """A number per run: model usage (`cost_usd`, `input_tokens`, `output_tokens`,
    `tokens`, `llm_calls`), `duration_s`, or a numeric field of the result or state;
    shifts either way, by Mann-Whitney and its rank-biserial effect size.

    Example:
        @app.workflow(monitors=[keel.drift.Metric("cost_usd")])
    """

    kind: ClassVar[str] = "metric"
    default_threshold: ClassVar[float] = 0.2
    source: str

    def needs(self) -> frozenset[str]:
        return frozenset({"steps"}) if self.source in USAGE else frozenset()

    @property
    def key(self) -> str:
        return self.name or f"metric:{self.source}"

    def observe(self, facts: RunFacts) -> float | str | None:
        if self.source in USAGE:
            return facts.usage()[self.source]
        found = facts.value(self.source)
        if isinstance(found, bool) or not isinstance(found, int | float):
            return None
        return float(found) if math.isfinite(found) else None

    def compare(self, recent: list[DriftValue], reference: list[DriftValue]) -> Judgement:
        new, ref = _numbers(recent), _numbers(reference)
        test = stats.mann_whitney(new, ref)
        effect = stats.rank_biserial(test.statistic, len(new), len(ref))
        detail = {
            "effect": effect,
            "reference_median": _median(ref),
            "recent_median": _median(new),
        }
        return self._verdict(abs(effect), test.p_value, detail)


_KINDS: dict[str, type[Monitor]] = {
    m.kind: m for m in (Distribution, Confidence, ApprovalRate, Metric)
}


def from_spec(spec: dict[str, Any]) -> Monitor:
    """The monitor a stored `spec()` describes."""
    cls = _KINDS.get(str(spec.get("kind")))
    if cls is None:
        raise ConfigError(
            f"unknown drift monitor kind {spec.get('kind')!r} in the store (known:"
            f" {', '.join(_KINDS)}): was it written by a newer Keel?"
        )
    ref = spec.get("reference") or {}
    reference: Rolling | Pinned = (
        Pinned(*ref["pinned"]) if "pinned" in ref else Rolling(int(ref.get("rolling", 500)))
    )
    names = {f.name for f in dataclasses.fields(cls)} - {"reference"}
    return cls(reference=reference, **{k: v for k, v in spec.items() if k in names})


def check_monitors(workflow: str, monitors: Any) -> tuple[Monitor, ...]:
    """`monitors=` of `@app.workflow`, checked: Monitor instances with distinct names."""
    if monitors is None:
        return ()
    if isinstance(monitors, Monitor) or not isinstance(monitors, list | tuple):
        raise ConfigError(
            f"workflow {workflow!r}: monitors= takes a list of keel.drift monitors"
            " (e.g. [keel.drift.Distribution('category')]), not "
            f"{type(monitors).__name__}"
        )
    seen: set[str] = set()
    for m in monitors:
        if not isinstance(m, Monitor) or type(m) is Monitor:
            raise ConfigError(
                f"workflow {workflow!r}: {m!r} is not a drift monitor: use"
                " keel.drift.Distribution, Confidence, ApprovalRate or Metric"
            )
        if m.key in seen:
            raise ConfigError(
                f"workflow {workflow!r} has two drift monitors named {m.key!r}: give one"
                " of them name=..."
            )
        seen.add(m.key)
    return tuple(monitors)


def _shares(counts: Counter[Any]) -> dict[str, float]:
    total = sum(counts.values()) or 1
    return {str(k): n / total for k, n in sorted(counts.items(), key=lambda kv: str(kv[0]))}


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _median(xs: list[float]) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
