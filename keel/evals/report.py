"""What a suite run found: per-scorer means, pass^k and spread, threshold checks per
scorer and per tag, the paired comparison against a baseline, and the verdict. Written
as JSON, Markdown, JUnit XML, or a baseline file to commit."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from keel.evals.runner import CaseResult, HarnessError
from keel.evals.stats import Paired, paired, pass_hat_k, spread

EXIT_PASS, EXIT_ERROR, EXIT_FAIL = 0, 1, 100
BASELINE_FORMAT = 1


@dataclass(frozen=True)
class Check:
    """One threshold: `scorer`'s mean over the cases (with `tag`, when given) >= `minimum`."""

    scorer: str
    tag: str | None
    minimum: float
    mean: float
    n: int
    failing: list[str]

    @property
    def ok(self) -> bool:
        return self.n == 0 or self.mean >= self.minimum

    @property
    def key(self) -> str:
        return f"{self.scorer}[{self.tag}]" if self.tag else self.scorer


def parse_threshold_key(key: str) -> tuple[str, str | None]:
    """`"fields"` -> ("fields", None); `"fields[billing]"` -> ("fields", "billing")."""
    if key.endswith("]") and "[" in key:
        scorer, _, tag = key[:-1].partition("[")
        return scorer, tag
    return key, None


def values_by_case(results: list[CaseResult], scorer: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in sorted(results, key=lambda r: (r.case.id, r.repeat)):
        if scorer in r.scores:
            out.setdefault(r.case.id, []).append(r.scores[scorer].value)
    return out


@dataclass
class Report:
    """The outcome of one suite run. `exit_code`: 0 pass, 100 a threshold failed or a
    scorer regressed significantly against the baseline.

    Example:
        report = await suite.run()
        print(report.markdown()); raise SystemExit(report.exit_code)
    """

    suite: str
    eval_id: str
    started_at: float
    ended_at: float
    repeats: int
    scorers: list[str]
    results: list[CaseResult]
    thresholds: list[Check] = field(default_factory=list)
    comparison: list[Paired] = field(default_factory=list)
    store_url: str | None = None  # where the runs and results are kept (None: deleted)

    @property
    def means(self) -> dict[str, float]:
        return {
            s: statistics.fmean(v for vs in values_by_case(self.results, s).values() for v in vs)
            for s in self.scorers
        }

    @property
    def pass_rate(self) -> float:
        return statistics.fmean(r.passed for r in self.results) if self.results else 0.0

    @property
    def pass_hat_k(self) -> float:
        by_case: dict[str, list[bool]] = {}
        for r in self.results:
            by_case.setdefault(r.case.id, []).append(r.passed)
        return pass_hat_k(by_case)

    @property
    def spread(self) -> dict[str, float]:
        return {s: spread(values_by_case(self.results, s)) for s in self.scorers}

    @property
    def failures(self) -> list[str]:
        """One line per failed threshold or significant regression, naming the scorer
        and the cases behind it."""
        lines = []
        for c in self.thresholds:
            if not c.ok:
                lines.append(
                    f"{c.key}: mean {c.mean:.3f} below threshold {c.minimum:.3f}"
                    f" (failing cases: {_names(c.failing)})"
                )
        for p in self.comparison:
            if p.regressed:
                lines.append(
                    f"{p.scorer}: regressed {p.delta:+.3f} against the baseline"
                    f" (95% CI [{p.low:+.3f}, {p.high:+.3f}], MDE {p.mde:.3f};"
                    f" cases worse: {_names(self._worse.get(p.scorer, []))})"
                )
        return lines

    _worse: dict[str, list[str]] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_FAIL if self.failures else EXIT_PASS

    @property
    def outcome(self) -> str:
        return "fail" if self.failures else "pass"

    # -- building -------------------------------------------------------------------

    def check(self, thresholds: Mapping[str, float]) -> None:
        """Fill `thresholds` from `{"scorer": min, "scorer[tag]": min}`."""
        for key, minimum in thresholds.items():
            scorer, tag = parse_threshold_key(key)
            chosen = [r for r in self.results if tag is None or tag in r.case.tags]
            vals = [r.scores[scorer].value for r in chosen if scorer in r.scores]
            failing = sorted({r.case.id for r in chosen if not r.scores[scorer].ok})
            mean = statistics.fmean(vals) if vals else 0.0
            self.thresholds.append(Check(scorer, tag, float(minimum), mean, len(vals), failing))

    def compare(self, baseline: Mapping[str, Any], seed: int = 0) -> None:
        """Fill `comparison` against a baseline (`load_baseline`), scorer by scorer."""
        base_cases: Mapping[str, Mapping[str, list[float]]] = baseline["cases"]
        for s in self.scorers:
            base = {cid: v[s] for cid, v in base_cases.items() if s in v}
            if not base:
                continue  # a scorer the baseline did not have: nothing to compare
            cur = values_by_case(self.results, s)
            got = paired(s, cur, base, seed=seed)
            if got is not None:
                self.comparison.append(got)
                self._worse[s] = sorted(
                    cid
                    for cid in set(cur) & set(base)
                    if statistics.fmean(cur[cid]) < statistics.fmean(base[cid])
                )

    # -- writing --------------------------------------------------------------------

    def baseline(self) -> dict[str, Any]:
        """What `--save-baseline` writes: every case's values per scorer and repeat.
        Deterministic (no times, sorted), so saving an unchanged suite changes no byte."""
        cases: dict[str, dict[str, list[float]]] = {}
        for s in self.scorers:
            for cid, vals in values_by_case(self.results, s).items():
                cases.setdefault(cid, {})[s] = [round(v, 6) for v in vals]
        return {
            "format": BASELINE_FORMAT,
            "suite": self.suite,
            "repeats": self.repeats,
            "means": {s: round(m, 6) for s, m in self.means.items()},
            "cases": dict(sorted(cases.items())),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "eval_id": self.eval_id,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "cases": len({r.case.id for r in self.results}),
            "repeats": self.repeats,
            "means": self.means,
            "pass_rate": self.pass_rate,
            "pass_hat_k": self.pass_hat_k,
            "spread": self.spread,
            "thresholds": [{**asdict(c), "key": c.key, "ok": c.ok} for c in self.thresholds],
            "comparison": [asdict(p) for p in self.comparison],
            "failures": self.failures,
            "store": self.store_url,
            "results": [
                {
                    "case": r.case.id,
                    "repeat": r.repeat,
                    "run_id": r.run_id,
                    "status": r.status,
                    "passed": r.passed,
                    "scores": {k: v.model_dump() for k, v in r.scores.items()},
                }
                for r in self.results
            ],
        }

    def markdown(self) -> str:
        k = self.repeats
        lines = [
            f"## Eval `{self.suite}`: {self.outcome.upper()}",
            "",
            f"{len({r.case.id for r in self.results})} cases x {k} repeat(s);"
            f" pass rate {self.pass_rate:.1%}"
            + (f", pass^{k} {self.pass_hat_k:.1%}" if k > 1 else ""),
            "",
            "| scorer | mean | baseline | change (95% CI) | MDE | threshold |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        by = {p.scorer: p for p in self.comparison}
        limits = {c.scorer: c for c in self.thresholds if c.tag is None}
        for s, mean in self.means.items():
            p, c = by.get(s), limits.get(s)
            lines.append(
                f"| {s} | {mean:.3f} | "
                + (
                    f"{p.baseline:.3f} | {p.delta:+.3f} [{p.low:+.3f}, {p.high:+.3f}] | {p.mde:.3f}"
                    if p
                    else "- | - | -"
                )
                + f" | {(('ok ' if c.ok else 'FAIL ') + f'>= {c.minimum:.2f}') if c else '-'} |"
            )
        tagged = [c for c in self.thresholds if c.tag is not None]
        if tagged:
            lines += ["", "| threshold | mean | cases | |", "| --- | --- | --- | --- |"]
            lines += [
                f"| {c.key} >= {c.minimum:.2f} | {c.mean:.3f} | {c.n} |"
                f" {'ok' if c.ok else 'FAIL'} |"
                for c in tagged
            ]
        if self.failures:
            lines += ["", "### Failures", ""] + [f"- {f}" for f in self.failures]
        failed = [r for r in self.results if not r.passed]
        if failed:
            lines += ["", "### Failing cases", ""]
            for r in failed[:50]:
                why = "; ".join(
                    f"{n}: {s.reason or round(s.value, 3)}" for n, s in r.scores.items() if not s.ok
                )
                lines.append(
                    f"- `{r.case.id}` (repeat {r.repeat}, run `{r.run_id}`, {r.status}): {why}"
                )
        return "\n".join(lines) + "\n"

    def junit(self) -> str:
        """JUnit XML: one test per case and repeat, failed when a scorer failed; one per
        failed threshold or regression."""
        cases = []
        for r in self.results:
            name = quoteattr(f"{r.case.id}#{r.repeat}")
            bad = [f"{n}: {s.reason or s.value}" for n, s in r.scores.items() if not s.ok]
            body = f"<failure message={quoteattr('; '.join(bad))}/>" if bad else ""
            cases.append(
                f'<testcase classname="{escape(self.suite)}" name={name}>{body}</testcase>'
            )
        for f in self.failures:
            cases.append(
                f'<testcase classname="{escape(self.suite)}.gate"'
                f" name={quoteattr(f.split(':')[0])}>"
                f"<failure message={quoteattr(f)}/></testcase>"
            )
        failures = sum("<failure" in c for c in cases)
        return (
            '<?xml version="1.0" encoding="utf-8"?>\n'
            f'<testsuite name="{escape(self.suite)}" tests="{len(cases)}" failures="{failures}">'
            + "".join(cases)
            + "</testsuite>\n"
        )


def _names(ids: list[str], most: int = 10) -> str:
    shown = ", ".join(ids[:most])
    return shown + (f" and {len(ids) - most} more" if len(ids) > most else "") if ids else "none"


def load_baseline(path: str | Path, suite: str) -> dict[str, Any]:
    """A baseline file written by `--save-baseline`, checked to be this suite's."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HarnessError(
            f"no baseline file {str(p)!r}: make one with `keel eval ... --save-baseline {p}`"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise HarnessError(f"cannot read baseline {str(p)!r}: {exc}") from None
    if (
        not isinstance(data, dict)
        or data.get("format") != BASELINE_FORMAT
        or not isinstance(data.get("cases"), dict)
    ):
        raise HarnessError(
            f"{p} is not a keel eval baseline (format {BASELINE_FORMAT}); write it again"
            " with --save-baseline"
        )
    if data.get("suite") != suite:
        raise HarnessError(
            f"baseline {p} belongs to suite {data.get('suite')!r}, not {suite!r}:"
            " pass this suite's baseline"
        )
    return data


def save_baseline(report: Report, path: str | Path) -> None:
    """Write `report.baseline()`: one line per case, so a diff shows which cases moved."""
    data = report.baseline()
    cases = data.pop("cases")
    head = json.dumps(data, indent=1)[:-2]  # without the closing brace
    rows = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in cases.items())
    Path(path).write_text(f'{head},\n "cases": {{\n{rows}\n }}\n}}\n', encoding="utf-8")
