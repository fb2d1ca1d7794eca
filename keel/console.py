"""Rich renderings of runs and journals, shared by the CLI and the demo."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from keel.types import RunInfo, RunStatus, StepRecord, StepStatus

_STATUS_STYLE = {
    RunStatus.PENDING: "yellow",
    RunStatus.RUNNING: "cyan",
    RunStatus.WAITING: "magenta",
    RunStatus.SUCCEEDED: "green",
    RunStatus.FAILED: "red",
    RunStatus.CANCELLED: "dim",
}
_STEP_STYLE = {StepStatus.OK: "green", StepStatus.ERROR: "red", StepStatus.PENDING: "magenta"}
_MAX_CHILDREN = 8


def short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def _ts(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def status_text(status: RunStatus) -> Text:
    return Text(status.value, style=_STATUS_STYLE[status])


def runs_table(runs: list[RunInfo]) -> Table:
    table = Table(show_lines=False, header_style="bold")
    for col in ("id", "workflow", "status", "created", "ended", "result / error"):
        table.add_column(col, overflow="fold")
    for r in runs:
        detail = ""
        if r.error is not None:
            detail = f"{r.error.type}: {short(r.error.message, 50)}"
        elif r.status is RunStatus.WAITING:
            detail = f"waiting on {', '.join(r.waiting_on) or 'timer'}"
        elif r.result is not None:
            detail = short(r.result, 50)
        table.add_row(
            r.id, r.workflow, status_text(r.status), _ts(r.created_at), _ts(r.ended_at), detail
        )
    return table


def _label(rec: StepRecord) -> Text:
    dur = ""
    if rec.ended_at is not None:
        dur = f" {(rec.ended_at - rec.started_at) * 1000:.1f} ms"
    text = Text()
    text.append(rec.key.rsplit("/", 1)[-1], style="bold")
    text.append(f"  {rec.kind.value}", style="dim")
    text.append(f"  {rec.status.value}", style=_STEP_STYLE[rec.status])
    if rec.attempts > 1:
        text.append(f"  attempts={rec.attempts}", style="yellow")
    text.append(dur, style="dim")
    if rec.status is StepStatus.ERROR and rec.error is not None:
        text.append(f"  {rec.error.type}: {short(rec.error.message)}", style="red")
    elif rec.status is StepStatus.PENDING and rec.wake_at:
        text.append(f"  until {_ts(rec.wake_at)}", style="magenta")
    elif rec.blob:
        text.append("  (output stored out of line)", style="dim")
    elif rec.output is not None:
        text.append(f"  → {short(rec.output)}")
    if rec.state_delta:
        text.append(f"  state: {', '.join(rec.state_delta)}", style="cyan")
    return text


def journal_tree(run: RunInfo, steps: list[StepRecord]) -> Tree:
    root = Tree(Text.assemble((run.id, "bold"), f"  {run.workflow}  ", status_text(run.status)))
    children: dict[str, list[StepRecord]] = {}
    for rec in steps:
        children.setdefault(rec.scope, []).append(rec)
    for recs in children.values():
        recs.sort(key=lambda r: r.position)

    def add(node: Tree, scope: str) -> None:
        recs = children.get(scope, [])
        shown = recs if len(recs) <= _MAX_CHILDREN + 2 else recs[:_MAX_CHILDREN]
        for rec in shown:
            sub = node.add(_label(rec))
            add(sub, rec.key + "/")
        if len(shown) < len(recs):
            rest = recs[len(shown) :]
            bad = sum(r.status is StepStatus.ERROR for r in rest)
            node.add(Text(f"… {len(rest)} more ({len(rest) - bad} ok, {bad} failed)", style="dim"))

    add(root, "")
    return root


def run_detail(run: RunInfo, steps: list[StepRecord]) -> Group:
    parts: list[Any] = [journal_tree(run, steps)]
    if run.status is RunStatus.WAITING:
        what = ", ".join(run.waiting_on) or "a timer"
        until = f" (until {_ts(run.wake_at)})" if run.wake_at else ""
        parts.append(Text(f"waiting on {what}{until}", style="magenta"))
    if run.result is not None:
        parts.append(Text(f"result: {short(run.result, 300)}"))
    if run.error is not None:
        parts.append(Text(f"error: {run.error.type}: {run.error.message}", style="red"))
    return Group(*parts)


def step_json(rec: StepRecord) -> dict[str, Any]:
    return rec.model_dump(mode="json", exclude_none=True)


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=False)
