"""`keel eval MODULE:SUITE`: run an eval suite and gate on it (docs/evals.md).

Exit codes (the CI contract): 0 pass, 100 a threshold failed or a scorer regressed
significantly against the baseline, 1 a harness error (nothing was measured: the suite
cannot be loaded, a dataset, baseline or scorer is broken). Arguments the command
cannot parse exit 2, like every keel command.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from keel.cli._common import JsonOpt
from keel.errors import KeelError

EXIT_PASS, EXIT_HARNESS, EXIT_GATE = 0, 1, 100


def _harness_error(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_HARNESS)


def _load_suite(target: str) -> Any:
    from keel.evals import Suite
    from keel.loader import load_module

    module_ref, sep, name = target.rpartition(":")
    if not sep or not module_ref or not name:
        _harness_error(
            f"expected MODULE:SUITE (e.g. examples/triage_eval.py:suite), got {target!r}"
        )
    module = load_module(module_ref)
    suite = getattr(module, name, None)
    if not isinstance(suite, Suite):
        found = [k for k, v in vars(module).items() if isinstance(v, Suite)]
        _harness_error(
            f"{module_ref} has no keel.evals.Suite named {name!r}"
            f" (suites there: {', '.join(found) or 'none'})"
        )
    return suite


def _summary(report: Any) -> str:
    """A few lines for the terminal: each scorer's mean, change and threshold."""
    head = (
        f"eval {report.suite}: {report.outcome.upper()}"
        f"  {len({r.case.id for r in report.results})} cases x {report.repeats},"
        f" pass rate {report.pass_rate:.1%}"
    )
    if report.repeats > 1:
        head += f", pass^{report.repeats} {report.pass_hat_k:.1%}"
    lines = [head]
    by = {p.scorer: p for p in report.comparison}
    limits = {c.scorer: c for c in report.thresholds if c.tag is None}
    for scorer, mean in report.means.items():
        line = f"  {scorer:<12} {mean:.3f}"
        p = by.get(scorer)
        if p is not None:
            line += (
                f"  vs baseline {p.baseline:.3f}: {p.delta:+.3f}"
                f" [{p.low:+.3f}, {p.high:+.3f}] MDE {p.mde:.3f}"
            )
        c = limits.get(scorer)
        if c is not None:
            line += f"  min {c.minimum:.2f} {'ok' if c.ok else 'FAIL'}"
        lines.append(line)
    lines += [f"FAIL {f}" for f in report.failures]
    return "\n".join(lines)


def eval_cmd(
    target: Annotated[str, typer.Argument(help="MODULE:SUITE, e.g. examples/triage_eval.py:suite")],
    baseline: Annotated[
        Path | None, typer.Option("--baseline", help="Compare with this baseline file.")
    ] = None,
    save_baseline: Annotated[
        Path | None, typer.Option("--save-baseline", help="Write this run as the baseline.")
    ] = None,
    as_json: JsonOpt = False,
    junit: Annotated[Path | None, typer.Option("--junit", help="Write JUnit XML here.")] = None,
    report_md: Annotated[
        Path | None, typer.Option("--report", help="Write a Markdown report here.")
    ] = None,
    store: Annotated[
        str | None,
        typer.Option("--store", help="Run and keep results in this store (default: a temp one)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap.")] = 0,
) -> None:
    """Run an eval suite; exit 0 pass, 100 regression or threshold failure, 1 harness error."""
    try:
        suite = _load_suite(target)
        report = asyncio.run(suite.run(store, baseline=baseline, seed=seed))
    except KeelError as exc:
        _harness_error(exc.message)
        return
    try:
        if save_baseline is not None:
            from keel.evals import save_baseline as write_baseline

            write_baseline(report, save_baseline)
        if junit is not None:
            junit.write_text(report.junit(), encoding="utf-8")
        if report_md is not None:
            report_md.write_text(report.markdown(), encoding="utf-8")
    except OSError as exc:
        _harness_error(f"cannot write {exc.filename}: {exc.strerror}")
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2, default=str))
    else:
        typer.echo(_summary(report))
        if save_baseline is not None:
            typer.echo(f"baseline written to {save_baseline}")
    raise typer.Exit(EXIT_GATE if report.failures else EXIT_PASS)
