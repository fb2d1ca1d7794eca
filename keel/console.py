"""Rich renderings of runs and journals, shared by the CLI and the demo."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from keel.observe import memory_spans
from keel.observe.journal_view import JournalView, journal_view, trim
from keel.observe.journal_view import Node as JournalNode
from keel.store.records import ENDED, Purged, PurgeScope, StoreSpace, UsageGroup
from keel.types import Escalation, RunInfo, RunStatus, StepKind, StepRecord, StepStatus

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


def _label(node: JournalNode, open_word: str) -> Text:
    rec = node.rec
    text = Text()
    text.append(node.name, style="bold")
    if rec is None:  # a map, gather or phase still in progress: written when it ends
        kind = node.kind
        text.append(f"  {kind.value if kind else 'step'}", style="dim")
        text.append(f"  ({open_word})", style="magenta")
        if node.changed:
            text.append(f"  state: {', '.join(node.changed)}", style="cyan")
        return text
    dur = ""
    if rec.ended_at is not None:
        dur = f" {(rec.ended_at - rec.started_at) * 1000:.1f} ms"
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
    elif rec.kind is StepKind.LLM and isinstance(rec.output, dict):
        text.append(_llm_summary(rec.output))
    elif rec.kind in (StepKind.MEMORY, StepKind.SESSION):
        text.append(f"  {_memory_line(rec)}", style="cyan")
    elif rec.output is not None:
        text.append(f"  → {short(rec.output)}")
    kept = _kept(node)
    if kept:
        text.append(kept, style="dim")
    if rec.fallback:
        text.append(f"  fallback={rec.fallback}", style="yellow")
    if node.changed:  # what the workflow changed after this step, before its next one
        text.append(f"  state: {', '.join(node.changed)}", style="cyan")
    return text


def _kept(node: JournalNode) -> str:
    """A `keep=` tool's cut: which fields of how many, and where the full output is."""
    full = next((c.rec for c in node.children if c.key == f"{node.key}/full#0"), None)
    if full is None or not isinstance(full.input, dict) or "kept" not in full.input:
        return ""
    ref = f"blob {full.blob[:16]}" if full.blob else full.key
    return f"  kept {len(full.input['kept'])} of {full.input.get('of')} fields, full output {ref}"


def _llm_summary(out: dict[str, Any]) -> Text:
    usage = out.get("usage") or {}
    text = Text()
    text.append(f"  {out.get('model', '?')}", style="blue")
    text.append(f"  {usage.get('input_tokens', 0)}→{usage.get('output_tokens', 0)} tok")
    text.append(f"  ${out.get('cost_usd', 0.0):.6f}")
    if out.get("cache_hit"):
        text.append("  cache hit", style="green")
    tried = out.get("tried") or []
    if len(tried) > 1:
        text.append(f"  (fell back: {' → '.join(tried)})", style="yellow")
    ctx = out.get("context")
    if isinstance(ctx, dict):
        text.append(context_summary(ctx), style="cyan")
    calls = out.get("tool_calls") or []
    if calls:
        text.append(f"  → calls {', '.join(c.get('name', '?') for c in calls)}")
    elif out.get("content") is not None:
        text.append(f"  → {short(out['content'])}")
    return text


def _memory_line(rec: StepRecord) -> str:
    """A memory or session step as `keel trace` shows its span: what it asked, got, wrote.
    (`keel show` redacted the record already, unless --raw asked for it as journaled.)"""
    return memory_spans.summary(memory_spans.attributes(rec, True, None))


def context_summary(record: dict[str, Any]) -> str:
    """A model call's context assembly in one line: tokens of budget, what was cut."""
    blocks = record.get("blocks") or []
    out = f"  context {record.get('tokens')}/{record.get('budget')} tok"
    for action in ("truncated", "dropped"):
        names = [f"{b['name']} ({b['full']} tok)" for b in blocks if b.get("action") == action]
        if names:
            out += f"; {action}: {', '.join(names)}"
    return out


def costs_table(rows: list[UsageGroup], group_by: str) -> Table:
    table = Table(header_style="bold")
    for col in (group_by, "calls", "input tok", "output tok", "cost (USD)", "cache hits"):
        table.add_column(col, justify="left" if col == group_by else "right")
    total = 0.0
    for r in rows:
        total += r.cost_usd or 0.0
        table.add_row(
            str(r.key),
            str(r.calls),
            str(r.input_tokens),
            str(r.output_tokens),
            f"{r.cost_usd or 0:.6f}",
            str(r.cache_hits),
        )
    table.caption = f"total ${total:.6f}"
    return table


def journal_tree(run: RunInfo, steps: list[StepRecord], view: JournalView | None = None) -> Tree:
    """The journal as a tree; `state: a, b` on a step names the state fields the workflow
    changed after it (before its next step), `(start)` those changed before the first."""
    if view is None:
        view = journal_view(run, steps)
    root = Tree(Text.assemble((run.id, "bold"), f"  {run.workflow}  ", status_text(run.status)))
    if view.start.changed:
        root.add(Text(f"(start)  state: {', '.join(view.start.changed)}", style="cyan"))
    open_word = {
        RunStatus.PENDING: "running",
        RunStatus.RUNNING: "running",
        RunStatus.WAITING: "in progress",
    }.get(run.status, "unfinished")

    def add(tree: Tree, node: JournalNode) -> None:
        for i, child in enumerate(node.children):
            if node.more and i == node.more_at:
                ok = node.more - node.more_failed - node.more_open
                extra = f", {node.more_open} {open_word}" if node.more_open else ""
                summary = f"… {node.more} more ({ok} ok, {node.more_failed} failed{extra})"
                tree.add(Text(summary, style="dim"))
            add(tree.add(_label(child, open_word)), child)

    trim([view.start], _MAX_CHILDREN)
    add(root, view.start)
    return root


def run_detail(run: RunInfo, steps: list[StepRecord], view: JournalView | None = None) -> Group:
    if view is None:
        view = journal_view(run, steps)
    parts: list[Any] = [journal_tree(run, steps, view)]
    if run.session and run.session != run.id:  # a run alone in its session: nothing to say
        parts.append(Text(f"session: {run.session}", style="dim"))
    if view.initial_from == "final state" and view.initial:
        # without the workflow's defaults, "never changed" and "changed only after the
        # last step" look the same in the store
        parts.append(
            Text(
                f"state fields no step changed (or changed only after the last one; "
                f"--app MODULE tells which): {', '.join(view.initial)}",
                style="dim",
            )
        )
    if run.status is RunStatus.WAITING:
        what = ", ".join(run.waiting_on) or "a timer"
        until = f" (until {_ts(run.wake_at)})" if run.wake_at else ""
        parts.append(Text(f"waiting on {what}{until}", style="magenta"))
    if run.result is not None:
        parts.append(Text(f"result: {short(run.result, 300)}"))
    if run.state is not None and run.status in (RunStatus.SUCCEEDED, RunStatus.FAILED):
        parts.append(Text(f"final state: {short(run.state, 300)}"))
    elif run.state is not None and run.status is RunStatus.WAITING:
        parts.append(Text(f"state as it waits: {short(run.state, 300)}"))
    if run.degraded:
        parts.append(
            Text(f"degraded (fell back to defaults): {', '.join(run.degraded)}", style="yellow")
        )
    if run.error is not None:
        parts.append(Text(f"error: {run.error.type}: {run.error.message}", style="red"))
        if run.error.fallback:
            parts.append(Text(f"fallback taken: {run.error.fallback}", style="red"))
    return Group(*parts)


def escalations_table(items: list[Escalation]) -> Table:
    table = Table(header_style="bold")
    for col in ("id", "queue", "kind", "status", "created", "decided by", "decided", "reason"):
        table.add_column(col, overflow="fold")
    for e in items:
        table.add_row(
            e.id,
            e.queue,
            e.kind,
            e.status,
            _ts(e.created_at),
            e.resolved_by or "-",
            _ts(e.resolved_at),
            short(e.packet.reason, 70),
        )
    return table


def escalation_detail(e: Escalation) -> Group:
    p = e.packet
    lines: list[Any] = [
        Text.assemble(("escalation ", "bold"), e.id, f"  [{e.status}]  queue={e.queue}"),
        Text(f"why: {p.reason}", style="yellow"),
        Text(
            f"workflow {p.workflow}, run {p.run_id}, step {p.step}"
            + (f", phase {p.phase}" if p.phase else "")
            + (f", tool {p.tool}" if p.tool else "")
        ),
    ]
    if p.input is not None:
        lines.append(Text(f"input: {short(p.input, 400)}"))
    if p.output is not None:
        lines.append(Text(f"rejected output: {short(p.output, 400)}"))
    for m in p.messages:
        lines.append(Text(f"  - {m}", style="red"))
    if p.error is not None:
        lines.append(Text(f"error: {p.error.type}: {p.error.message}", style="red"))
    if p.journal:
        lines.append(Text("what it did:", style="bold"))
        for item in p.journal:
            detail = item.get("error") or item.get("output") or ""
            lines.append(Text(f"  {item['key']}  {item['status']}  {short(detail, 80)}"))
    if p.state is not None:
        lines.append(Text(f"state: {short(p.state, 400)}"))
    if e.resolution is not None:
        lines.append(
            Text(
                f"decided by {e.resolved_by} at {_ts(e.resolved_at)}: {short(e.resolution, 300)}",
                style="green",
            )
        )
    else:
        lines.append(
            Text(
                f"resolve: keel escalations resolve {e.id} --result JSON   "
                f"reject: keel escalations reject {e.id} --reason TEXT",
                style="dim",
            )
        )
    return Group(*lines)


def step_json(rec: StepRecord, node: JournalNode | None = None) -> dict[str, Any]:
    """A journal record as JSON; with its node from `journal_view`, also `state_changed`
    (the state fields the workflow changed after this step, before its next one) and
    `state_after` (the state then, as the next step saw it)."""
    out = rec.model_dump(mode="json", exclude_none=True)
    if node is not None:
        out["state_changed"] = node.changed
        if node.state is not None:
            out["state_after"] = node.state
    return out


def run_json(run: RunInfo, steps: list[StepRecord], view: JournalView) -> dict[str, Any]:
    """`keel show --json`: the run, its state, where each state change happened, the steps."""
    by_key = view.by_key()
    return {
        **run.summary(),
        "state": run.state,
        "state_start": {
            "initial": view.initial,
            "initial_from": view.initial_from,
            "changed": view.start.changed,
            "state": view.start.state,
        }
        if view.stateful
        else None,
        "steps": [step_json(s, by_key.get(s.key) if view.stateful else None) for s in steps],
    }


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def trace_tree(spans: list[Any]) -> Tree:
    """The span tree of a run: name, duration, status, tokens and cost, errors."""
    by_parent: dict[int | None, list[Any]] = {}
    ids = {sp.span_id for sp in spans}
    for sp in spans:
        parent = sp.parent_id if sp.parent_id in ids else None
        by_parent.setdefault(parent, []).append(sp)
    for group in by_parent.values():
        group.sort(key=lambda sp: sp.start_ns)
    roots = by_parent.get(None, [])
    title = Text(f"trace {spans[0].trace_id:032x}" if spans else "no spans", style="bold")
    tree = Tree(title)

    def label(sp: Any) -> Text:
        a = sp.attributes
        text = Text(sp.name, style="bold" if sp.parent_id is None else "")
        if sp.end_ns is not None:
            text.append(f"  {(sp.end_ns - sp.start_ns) / 1e6:.1f} ms", style="dim")
        else:
            text.append("  (interrupted)", style="yellow")
        style = {"ERROR": "red", "OK": "green"}.get(sp.status, "dim")
        text.append(f"  {sp.status}", style=style)
        if "gen_ai.usage.input_tokens" in a:
            text.append(
                f"  {a['gen_ai.usage.input_tokens']}→{a['gen_ai.usage.output_tokens']}"
                f" tok  ${a.get('keel.cost.usd', 0.0):.6f}"
            )
        line = memory_spans.summary(a)
        if line:
            text.append(f"  {line}", style="cyan")
        if a.get("keel.step.attempts", 1) > 1:
            text.append(f"  attempts={a['keel.step.attempts']}", style="yellow")
        if a.get("keel.fallback"):
            text.append(f"  fallback={a['keel.fallback']}", style="yellow")
        if sp.status_message:
            text.append(f"  {short(sp.status_message, 100)}", style="red")
        return text

    def add(node: Tree, sp: Any, depth: int) -> None:
        sub = node.add(label(sp))
        kids = by_parent.get(sp.span_id, [])
        shown = kids if len(kids) <= _MAX_CHILDREN + 2 else kids[:_MAX_CHILDREN]
        for kid in shown:
            add(sub, kid, depth + 1)
        if len(shown) < len(kids):
            rest = kids[len(shown) :]
            bad = sum(k.status == "ERROR" for k in rest)
            sub.add(Text(f"… {len(rest)} more spans ({bad} failed)", style="dim"))

    for root in roots:
        add(tree, root, 0)
    return tree


def reviews_table(items: list[Any]) -> Table:
    table = Table(header_style="bold")
    for col in ("id", "kind", "queue", "status", "age", "deadline", "action / reason"):
        table.add_column(col, overflow="fold")
    import time as _time

    now = _time.time()
    for r in items:
        age = f"{(now - r.created_at) / 60:.0f} min"
        action = (
            f"{r.tool}({short(r.args, 40)})" if r.tool else short(r.request.get("reason", ""), 50)
        )
        table.add_row(r.id, r.kind, r.queue, r.status, age, _ts(r.deadline), action)
    return table


def review_detail(r: Any, audit: list[dict[str, Any]] | None = None) -> Group:
    """Why it is here first, then the proposed action, the request, the context; then
    its audit log (who requested, decided, escalated), when given."""
    req = r.request
    lines: list[Any] = [
        Text.assemble((f"{r.kind} ", "bold"), r.id, f"  [{r.status}]  queue={r.queue}"),
        Text(f"why: {req.get('reason', '-')}", style="yellow"),
    ]
    if r.tool:
        lines.append(Text(f"proposed action: {r.tool}", style="bold"))
        for name, value in (r.args or {}).items():
            lines.append(Text(f"  {name} = {short(value, 200)}"))
    if "output" in req:
        lines.append(Text(f"output: {short(req['output'], 400)}  (score {req.get('score')})"))
    if "input" in req:
        lines.append(Text(f"input: {short(req['input'], 400)}"))
    if "result" in req:
        lines.append(Text(f"result: {short(req['result'], 400)}"))
    if req.get("incoming") is not None:
        lines.append(Text(f"incoming request: {short(req['incoming'], 400)}"))
    if req.get("context") is not None:
        lines.append(Text(f"context: {short(req['context'], 400)}"))
    lines.append(
        Text(
            f"run {r.run_id} ({r.workflow}), step {r.step}, deadline {_ts(r.deadline)}", style="dim"
        )
    )
    if r.decision is not None:
        lines.append(
            Text(
                f"decided by {r.decided_by} at {_ts(r.decided_at)}: {short(r.decision, 300)}",
                style="green",
            )
        )
    if audit:
        lines.append(Text("audit log:", style="bold"))
        for e in audit:
            detail = f"  {short(e['detail'], 120)}" if e.get("detail") else ""
            lines.append(Text(f"  {_ts(e['at'])}  {e['action']} by {e['actor']}{detail}"))
    return Group(*lines)


def workers_table(workers: list[Any], now: float, temporal: Sequence[Any] = ()) -> Table:
    """`keel workers`: one row per worker (`keel.store.WorkerBeat`), then the Temporal
    workers polling the App's task queue (`keel.backends.temporal.pollers`)."""
    table = Table(header_style="bold")
    for col in ("host", "pid", "workflows", "kind", "up since", "last seen"):
        table.add_column(col, overflow="fold")
    for w in workers:
        seen = f"{max(0.0, now - w.seen_at):.0f}s ago" + ("" if w.live(now) else " (gone)")
        kind = "embedded (own runs)" if w.embedded else "worker"
        table.add_row(w.host, str(w.pid), ", ".join(w.workflows), kind, _ts(w.started_at), seen)
    for t in temporal:  # Temporal knows when it last polled, not when it started
        seen = f"{max(0.0, now - t.last_seen):.0f}s ago" + ("" if t.live(now) else " (gone?)")
        host = t.identity if t.host is None else t.host
        served = ", ".join(t.workflows) or "(not a Keel worker: unknown)"
        kind = f"temporal (queue {t.task_queue})"
        table.add_row(host, "-" if t.pid is None else str(t.pid), served, kind, "-", seen)
    return table


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def purge_report(
    done: Purged, scope: PurgeScope, older_than: str, dry_run: bool, space: StoreSpace | None
) -> str:
    """`keel runs purge`: what went (or would go), per table, and the store's size after
    (`space`, None for a dry run)."""
    ended = set(scope.statuses) == set(ENDED)
    which = "ended" if ended else "/".join(s.value for s in scope.statuses)
    if scope.workflow:
        which += f" {scope.workflow}"
    cutoff = f"ended before {_ts(scope.ended_before)} UTC (--older-than {older_than})"
    verb = "would purge" if dry_run else "purged"
    head = f"{verb} {done.runs} {which} run(s) that {cutoff}"
    if not done.runs:
        head = f"nothing to purge: no {which} run {cutoff}"
    counts = done.counts()
    counts.pop("runs")
    parts = [
        f"{table} {n}" + (" (kept as per-day totals)" if table == "usage" else "")
        for table, n in counts.items()
        if n
    ]
    lines = [head] + (["  " + ", ".join(parts)] if parts else [])
    if space is not None:
        if space.shrinks:
            lines.append(f"store: {_mib(space.size_bytes)}; freed space goes back to the disk")
        else:
            lines.append(
                f"store: {_mib(space.size_bytes)}, {_mib(space.free_bytes)} of it free (reused"
                " by new writes; --vacuum gives it back to the disk)"
            )
    return "\n".join(lines)
