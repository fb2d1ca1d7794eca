"""`keel drift`: drift monitors from the shell (docs/drift.md): each monitor's status now
(`report`), and observing ended runs again after a crash lost their observation
(`backfill`). Both read the store only: monitors' settings are stored with their values."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keel.cli._common import JsonOpt, _print_json, _run, _with_app

EXIT_ALERT = 100  # `report --check`: some monitor alerts (the CI contract of `keel eval`)

drift_cli = typer.Typer(
    help="Drift monitors: report, backfill (docs/drift.md).", no_args_is_help=True
)


def _num(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}g}"


def _window(w: dict[str, Any]) -> str:
    return f"last {w['recent']} vs {w['reference']} ({w['reference_kind']})"


@drift_cli.command("report")
def drift_report(
    workflow: Annotated[
        str | None, typer.Option("--workflow", "-w", help="Only this workflow's monitors")
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help=f"Exit {EXIT_ALERT} when any monitor alerts")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Each monitor's status (ok, alert, insufficient), its statistic and threshold, and
    the windows it compared."""
    rows = _run(lambda: _with_app(lambda app: app.drift.report(workflow)))
    if as_json:
        _print_json([r.to_json() for r in rows])
    elif not rows:
        where = f" for workflow {workflow!r}" if workflow else ""
        typer.echo(f"no drift monitors have observed runs{where} in this store")
    else:
        head = f"{'workflow':<16} {'monitor':<26} {'status':<12} {'statistic':>9}"
        typer.echo(f"{head} {'threshold':>9} {'p':>9}  window")
        for r in rows:
            mark = "ALERT" if r.status == "alert" else r.status
            typer.echo(
                f"{r.workflow:<16} {r.monitor:<26} {mark:<12} {_num(r.statistic):>9}"
                f" {_num(r.threshold):>9} {_num(r.p_value, 2):>9}  {_window(r.window)}"
            )
    if check and any(r.status == "alert" for r in rows):
        raise typer.Exit(EXIT_ALERT)


@drift_cli.command("backfill")
def drift_backfill(
    workflow: str,
    limit: Annotated[int, typer.Option("--limit", help="At most this many ended runs")] = 10_000,
    as_json: JsonOpt = False,
) -> None:
    """Observe WORKFLOW's ended runs that have no observation yet (a crash between a run's
    end and its observation loses it); what is stored already is kept."""
    added = _run(lambda: _with_app(lambda app: app.drift.backfill(workflow, limit)))
    _print_json({"workflow": workflow, "added": added}) if as_json else typer.echo(
        f"{added} observation(s) added for {workflow}"
    )
