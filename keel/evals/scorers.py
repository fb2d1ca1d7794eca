"""The built-in scorers. Each reads the case's run from its journal (`EvalRun`): the
result and state it recorded, the tool and model steps it took, the queues it went to,
what its model calls cost. Each returns a `Score` with partial credit and a reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from keel.errors import ConfigError
from keel.evals.dataset import Case
from keel.evals.run import Call, EvalRun, Score, Scorer

# A matcher compares an expected value with the actual one: True/False or a credit in [0, 1].
Matcher = Callable[[Any, Any], bool | float]


def exact() -> Matcher:
    """Equal, as JSON values. Example: `fields({"category": exact()})`"""
    return lambda want, got: want == got


def near(abs_tol: float = 0.0, rel_tol: float = 0.0) -> Matcher:
    """A number within `abs_tol` (or `rel_tol` of the expected value).
    Example: `fields({"total": near(0.01)})`"""

    def match(want: Any, got: Any) -> bool:
        try:
            w, g = float(want), float(got)
        except (TypeError, ValueError):
            return False
        return abs(w - g) <= max(abs_tol, rel_tol * abs(w))

    return match


def same_set() -> Matcher:
    """The same items in any order, with partial credit (Jaccard overlap).
    Example: `fields({"signals": same_set()})`"""

    def match(want: Any, got: Any) -> float:
        w = {_key(x) for x in (want or [])}
        g = {_key(x) for x in (got or [])} if isinstance(got, list | tuple | set) else set()
        return 1.0 if w == g else len(w & g) / len(w | g)

    return match


def ignore() -> Matcher:
    """Anything: for an argument whose value does not matter (a generated body)."""
    return lambda want, got: True


def _key(x: Any) -> Any:
    return repr(x) if isinstance(x, dict | list) else x


def _credit(matcher: Matcher, want: Any, got: Any) -> float:
    value = matcher(want, got)
    return float(value) if not isinstance(value, bool) else (1.0 if value else 0.0)


def _expected(case: Case, key: str) -> Any:
    if isinstance(case.expected, Mapping):
        return case.expected.get(key)
    return None


def fields(
    *names: str | Mapping[str, Matcher | str],
    source: Literal["result", "state"] = "result",
    name: str = "fields",
) -> Scorer:
    """Per-field correctness of the run's result (or state) against `case.expected`,
    with partial credit: the share of fields that match (a set matcher's overlap counts).

    Fields the case does not expect are not counted. A negative case (from `keel review
    export`) passes when the output differs from the one rejected.

    Example:
        fields("category", {"priority": exact(), "total": near(0.01)})
    """
    spec: dict[str, Matcher] = {}
    for item in names:
        for field_name, m in ({item: "exact"} if isinstance(item, str) else item).items():
            spec[field_name] = exact() if m == "exact" else m  # type: ignore[assignment]
    if not spec:
        raise ConfigError("fields() needs at least one field name, e.g. fields('category')")

    async def score(case: Case, run: EvalRun) -> Score:
        got = run.result if source == "result" else run.info.state
        if case.rejected is not None:
            same = got == case.rejected
            return Score(
                value=0.0 if same else 1.0, reason="the rejected output again" if same else ""
            )
        if not isinstance(got, Mapping):
            return Score(value=0.0, reason=f"no {source} ({run.status.value.lower()})")
        total, credit, wrong = 0, 0.0, []
        for key, matcher in spec.items():
            want = _expected(case, key)
            if want is None:
                continue
            total += 1
            c = _credit(matcher, want, got.get(key))
            credit += c
            if c < 1.0:
                mismatch = f"{got.get(key)!r} != {want!r}"
                wrong.append(mismatch if len(spec) == 1 else f"{key}: {mismatch}")
        if total == 0:
            return Score(value=1.0, reason="no expected fields")
        return Score(value=credit / total, reason="; ".join(wrong))

    return Scorer(name, score)


Mode = Literal["strict", "unordered", "subset", "superset"]


def _step(item: Any) -> tuple[str, dict[str, Any] | None]:
    if isinstance(item, str):
        return item, None
    if isinstance(item, Mapping) and "name" in item:
        return str(item["name"]), dict(item.get("args") or {}) if "args" in item else None
    raise ConfigError(f"a trajectory step is a name or {{'name', 'args'}}, got {item!r}")


def trajectory(
    expected: Sequence[Any] | None = None,
    mode: Mode = "strict",
    args: Mapping[str, Mapping[str, Matcher]] | None = None,
    kinds: Sequence[str] = ("tool", "llm"),
    name: str = "trajectory",
) -> Scorer:
    """The tool and model steps the run took against the expected ones.

    `mode`: `strict` (same steps, same order), `unordered` (same steps, any order),
    `subset` (took nothing beyond the expected), `superset` (took every expected step,
    extras allowed). An expected step is a name (`"lookup_account"`, `"llm:classify"`)
    or `{"name", "args"}`; its arguments are compared per argument, exactly unless `args`
    gives a matcher (`{"send_reply": {"body": ignore()}}`). `expected` None reads
    `case.expected["trajectory"]`. Value: 1 when the mode holds, else the F1 of matched
    steps (partial credit).

    Example:
        trajectory(["llm:classify", {"name": "lookup_account", "args": {"account_id":
                    "acct_1003"}}], mode="superset")
    """
    if mode not in ("strict", "unordered", "subset", "superset"):
        raise ConfigError(f"trajectory mode {mode!r}: use strict, unordered, subset or superset")
    overrides = {k: dict(v) for k, v in (args or {}).items()}

    def matches(want: tuple[str, dict[str, Any] | None], got: Call) -> bool:
        wname, wargs = want
        if wname != got.name:
            return False
        per_arg = overrides.get(wname, {})
        for arg, value in (wargs or {}).items():
            if _credit(per_arg.get(arg, exact()), value, got.args.get(arg)) < 1.0:
                return False
        return True

    async def score(case: Case, run: EvalRun) -> Score:
        raw = expected if expected is not None else _expected(case, "trajectory")
        if raw is None:
            return Score(value=1.0, reason="no expected trajectory")
        want = [_step(x) for x in raw]
        got = [c for c in run.calls if c.kind in kinds]
        used: set[int] = set()
        pairs: list[tuple[int, int]] = []
        for i, w in enumerate(want):
            j = next((j for j, g in enumerate(got) if j not in used and matches(w, g)), None)
            if j is not None:
                used.add(j)
                pairs.append((i, j))
        all_want, all_got = len(pairs) == len(want), len(pairs) == len(got)
        in_order = [j for _, j in pairs] == sorted(j for _, j in pairs)
        ok = {
            "strict": all_want and all_got and in_order,
            "unordered": all_want and all_got,
            "subset": all_got,
            "superset": all_want,
        }[mode]
        # Partial credit: F1 of the matched steps; in strict mode only those in order
        # count (the longest common subsequence), so a reordering costs credit too.
        hits = _in_order(want, got, matches) if mode == "strict" else len(pairs)
        precision = hits / len(got) if got else float(not want)
        recall = hits / len(want) if want else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        took = [c.name for c in got]
        reason = "" if ok else f"took {took}, expected ({mode}) {[w[0] for w in want]}"
        return Score(value=1.0 if ok else f1, passed=ok, reason=reason)

    return Scorer(name, score)


def _in_order(
    want: list[tuple[str, dict[str, Any] | None]],
    got: list[Call],
    matches: Callable[[tuple[str, dict[str, Any] | None], Call], bool],
) -> int:
    """How many expected steps the run took in the expected order (LCS length)."""
    prev = [0] * (len(got) + 1)
    for w in want:
        cur = [0]
        for j, g in enumerate(got):
            cur.append(prev[j] + 1 if matches(w, g) else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def route(
    routes: Mapping[str, str] | Sequence[str],
    field: str = "route",
    default: str = "none",
    name: str = "route",
) -> Scorer:
    """Which branch or queue the run took, against `case.expected[field]`.

    A run's route is read from its journal (`EvalRun.markers`: its steps' names in
    order, then `queue:<q>` for each people queue it was sent to): the label of the
    first of `routes` whose marker it has, else `default`.

    Example:
        route({"escalated": "escalation", "replied": "send_reply"}, default="dropped")
    """
    table = dict(routes) if isinstance(routes, Mapping) else {r: r for r in routes}
    if not table:
        raise ConfigError("route() needs the routes to look for, e.g. route(['send_reply'])")

    async def score(case: Case, run: EvalRun) -> Score:
        taken = route_of(run, table, default)
        want = _expected(case, field)
        if want is None:
            return Score(value=1.0, reason=f"took {taken}; no expected {field}")
        ok = taken == want
        return Score(value=float(ok), reason="" if ok else f"took {taken!r}, expected {want!r}")

    return Scorer(name, score)


def route_of(run: EvalRun, routes: Mapping[str, str], default: str = "none") -> str:
    """The label of the first route marker the run has (`route`'s definition)."""
    markers = run.markers
    for marker in markers:
        for label, wanted in routes.items():
            if marker == wanted:
                return label
    return default


def budget(
    max_cost_usd: float | None = None, max_tokens: int | None = None, name: str = "budget"
) -> Scorer:
    """Whether the run's model calls stayed within a cost and token budget (from the
    usage journaled with each model step). Example: `budget(max_cost_usd=0.002)`"""

    async def score(case: Case, run: EvalRun) -> Score:
        over = []
        if max_cost_usd is not None and run.cost_usd > max_cost_usd:
            over.append(f"cost ${run.cost_usd:.6f} > ${max_cost_usd}")
        if max_tokens is not None and run.tokens > max_tokens:
            over.append(f"{run.tokens} tokens > {max_tokens}")
        return Score(value=0.0 if over else 1.0, reason="; ".join(over))

    return Scorer(name, score)


def latency(max_seconds: float, name: str = "latency") -> Scorer:
    """Whether the run settled within `max_seconds` (wall time, the harness's own
    decisions on waits included). Example: `latency(5.0)`"""

    async def score(case: Case, run: EvalRun) -> Score:
        ok = run.latency <= max_seconds
        return Score(value=float(ok), reason="" if ok else f"{run.latency:.2f}s > {max_seconds}s")

    return Scorer(name, score)
