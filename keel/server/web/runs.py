"""The runs list (filters: workflow, status, created since / until) and a run's page:
its header, input and result, the journal as a tree with the state after every step,
the requests for people it made, and its trace as a waterfall.

The journal tree follows the keys' scopes exactly as `keel.console.journal_tree` does:
a step's children are the records whose scope is `<its key>/` (map items, gather
branches, phase attempts, review decisions). The state after each step is a fold of
the recorded `state_delta`s done the way the engine restores state on replay
(`StateTracker.apply`): map items and gather branches work on a copy forked from the
state as it stood when the map started; phase attempts share their parent's state and
each restarts from the phase's start; a person's resolution of a phase escalation sets
the fields it names (unless the run refused it and escalated again).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from keel.errors import InputError
from keel.hitl.api import DECISION_KINDS
from keel.server.sessions import Session
from keel.server.timeparse import parse_time
from keel.server.web.context import Web
from keel.server.web.format import url_id
from keel.server.web.waterfall import layout, money
from keel.types import RunInfo, RunStatus, StepKind, StepRecord, StepStatus

log = logging.getLogger("keel.server")

RUNS_LIMIT = 200
MAX_CHILDREN = 100  # per journal scope on the page; the rest is summarised
_REQUESTS_LIMIT = 10_000
STATUSES = [s.value for s in RunStatus]
_LOCAL = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?")


# -- the journal tree and the state fold --------------------------------------------------


@dataclass
class Node:
    """One journal entry in the tree (or a placeholder for a step not yet recorded)."""

    key: str
    rec: StepRecord | None
    children: list[Node] = field(default_factory=list)
    state: dict[str, Any] | None = None  # the state after this step
    requests: list[dict[str, Any]] = field(default_factory=list)  # approvals etc. it made
    partial: bool = False  # inside a map not recorded yet: changes made before it are not
    more: int = 0  # children left off the page
    more_failed: int = 0

    @property
    def name(self) -> str:
        """The key's last segment: `double#1`, `map:item#0`, `0` for a map item."""
        return self.key.rsplit("/", 1)[-1]

    @property
    def kind(self) -> StepKind | None:
        return self.rec.kind if self.rec is not None else guess_kind(self.key)

    @property
    def duration(self) -> float | None:
        rec = self.rec
        if rec is None or rec.ended_at is None:
            return None
        return max(rec.ended_at - rec.started_at, 0.0)

    def walk(self) -> Iterable[Node]:
        yield self
        for child in self.children:
            yield from child.walk()


def guess_kind(key: str) -> StepKind | None:
    """The kind of a step not recorded yet, from its key (`phase:x#0`, `map:f#0/3`)."""
    parent, _, tail = key.rpartition("/")
    if tail.startswith("phase:"):
        return StepKind.PHASE
    if tail.startswith("map:"):
        return StepKind.MAP
    if tail.startswith("gather#"):
        return StepKind.GATHER
    if tail.isdigit() and parent:
        above = parent.rsplit("/", 1)[-1]
        if above.startswith("phase:"):
            return StepKind.PHASE  # an attempt of a phase
        if above.startswith(("map:", "gather#")):
            return StepKind.CHILD  # a map item or gather branch
    return None


def journal_tree(steps: Iterable[StepRecord]) -> list[Node]:
    """The journal as a forest: each scope's steps by position, children under `key/`.

    A scope whose parent step is not recorded yet (a phase or map still in progress)
    gets a placeholder node (`rec` None) at the end of its own parent scope.
    """
    nodes: dict[str, Node] = {}
    scopes: dict[str, list[Node]] = {}
    for rec in steps:
        if rec.kind in (StepKind.MAP, StepKind.GATHER) and rec.status is StepStatus.PENDING:
            continue  # only the mark that a fan-out started: shown as in progress
        node = Node(rec.key, rec)
        nodes[rec.key] = node
        scopes.setdefault(rec.scope, []).append(node)

    def ensure(scope: str) -> None:
        if not scope:
            return
        key = scope[:-1]
        if key in nodes:
            return
        node = Node(key, None)
        nodes[key] = node
        parent = key.rsplit("/", 1)[0] + "/" if "/" in key else ""
        scopes.setdefault(parent, []).append(node)
        ensure(parent)

    for scope in list(scopes):
        ensure(scope)
    for scope, members in scopes.items():
        members.sort(
            key=lambda n: (
                n.rec is None,
                n.rec.position if n.rec else 0,
                n.rec.started_at if n.rec else 0.0,
                n.key,
            )
        )
        if scope:
            nodes[scope[:-1]].children = members
    return scopes.get("", [])


def _merge(state: dict[str, Any], delta: dict[str, Any] | None) -> dict[str, Any]:
    return {**state, **delta} if delta else state


def fold_states(
    roots: list[Node], initial: dict[str, Any], fields: set[str] | None = None
) -> dict[str, Any]:
    """Set `node.state` to the state after each step; returns the state after the root.

    `fields` (the state model's fields, when known) limits what a person's phase
    resolution may set, as `StateTracker.apply` does.
    """

    def run_scope(members: list[Node], state: dict[str, Any]) -> dict[str, Any]:
        for node in members:
            state = visit(node, state)
        return state

    def visit(node: Node, state: dict[str, Any]) -> dict[str, Any]:
        kind = node.kind
        delta = node.rec.state_delta if node.rec is not None else None
        if kind is StepKind.CHILD:
            # a map item or gather branch: its own copy, forked from the parent's state
            node.state = _merge(run_scope(node.children, dict(state)), delta)
            return state
        if kind in (StepKind.MAP, StepKind.GATHER):
            # its delta holds what changed before the map began (the parent waits on
            # it while the items run on forks), so the forks start from that state
            state = _merge(state, delta)
            node.state = state
            for item in node.children:
                visit(item, state)
            if node.rec is None:  # still running: that delta is not on record yet
                for inner in node.walk():
                    inner.partial = True
            return state
        if kind is StepKind.PHASE and any(_attempt(c) for c in node.children):
            base = last = state
            # a resolution followed by another escalation round was refused by the run
            rounds = [i for i, c in enumerate(node.children) if c.name.startswith("escalation")]
            for i, item in enumerate(node.children):
                tail = item.name
                if _attempt(item):  # each attempt restarts from the phase's start
                    last = run_scope(item.children, dict(base))
                    item.state = last
                elif item.kind is StepKind.SIGNAL and tail.startswith("resolution") and item.rec:
                    if not any(r > i for r in rounds):
                        last = _merge(last, _resolution_edits(item.rec.output, fields))
                    item.state = last
                else:
                    visit(item, last)
            state = _merge(last, delta)
            node.state = state
            return state
        state = _merge(state, delta)
        node.state = state
        for child in node.children:  # decisions, resolutions: scopes without state
            visit(child, state)
        return state

    return run_scope(roots, dict(initial))


def _attempt(node: Node) -> bool:
    return node.kind is StepKind.PHASE and node.name.isdigit()


def _resolution_edits(output: Any, fields: set[str] | None) -> dict[str, Any] | None:
    if not isinstance(output, dict) or output.get("status") != "resolved":
        return None
    edits = output.get("result")
    if not isinstance(edits, dict):
        return None
    return {k: v for k, v in edits.items() if fields is None or k in fields}


def trim(nodes: list[Node], limit: int = MAX_CHILDREN) -> list[Node]:
    """At most `limit` children per scope on the page; the rest counted on the parent."""
    for node in nodes:
        if len(node.children) > limit + 2:
            rest = node.children[limit:]
            node.children = node.children[:limit]
            node.more = len(rest)
            node.more_failed = sum(
                1 for n in rest if n.rec is not None and n.rec.status is StepStatus.ERROR
            )
        trim(node.children, limit)
    return nodes


# -- reading a run -----------------------------------------------------------------------


def initial_state(web: Web, workflow: str) -> tuple[dict[str, Any] | None, set[str] | None]:
    """The state a new run of `workflow` starts with, and its fields (None: unknown here)."""
    wf = web.app.registry.workflows.get(workflow)
    model = getattr(wf, "state", None) if wf is not None else None
    if model is None:
        return None, None
    try:
        value: dict[str, Any] = model().model_dump(mode="json")
    except Exception:  # a state model without defaults cannot start a run either
        return None, set(model.model_fields)
    return value, set(model.model_fields)



def run_duration(run: RunInfo) -> float | None:
    return None if run.ended_at is None else max(run.ended_at - run.created_at, 0.0)


async def requests_of(web: Web, run: RunInfo) -> list[dict[str, Any]]:
    """The requests for a person this run made: approvals, reviews, samples, escalations."""
    store = web.app.store
    out: list[dict[str, Any]] = []
    for row in await store.list_reviews(limit=_REQUESTS_LIMIT, run_id=run.id):
        kind = str(row.get("kind"))
        base = "/approvals/" if kind in DECISION_KINDS else "/reviews/"
        out.append(
            {
                "id": row["id"],
                "kind": kind,
                "step": row.get("step"),
                "status": row.get("status"),
                "queue": row.get("queue"),
                "decided_by": row.get("decided_by"),
                "created_at": row.get("created_at"),
                "href": base + url_id(str(row["id"])),
            }
        )
    for esc in await store.list_escalations(None, None, _REQUESTS_LIMIT, run_id=run.id):
        out.append(
            {
                "id": esc.id,
                "kind": f"{esc.kind} escalation",
                "step": esc.step,
                "status": esc.status,
                "queue": esc.queue,
                "decided_by": esc.resolved_by,
                "created_at": esc.created_at,
                "href": "/escalations/" + url_id(esc.id),
            }
        )
    out.sort(key=lambda r: (r["created_at"] or 0, str(r["id"])))
    return out


def _time_filter(text: str, name: str, errors: dict[str, str]) -> float | None:
    if not text.strip():
        return None
    try:
        return parse_time(text, name)
    except InputError as exc:
        errors[name] = exc.message
        return None


def _looks_local(text: str) -> bool:
    """What an `<input type=datetime-local>` can hold: `YYYY-MM-DDTHH:MM[:SS[.fff]]`."""
    return bool(_LOCAL.fullmatch(text))


# -- routes --------------------------------------------------------------------------------


def add_routes(web: Web, router: FastAPI) -> None:
    """Register this module's pages on the console's app."""
    app = web.app

    @router.get("/runs", response_class=HTMLResponse)
    async def runs_page(
        request: Request,
        workflow: str = "",
        status: str = "",
        since: str = "",
        until: str = "",
        s: Session = Depends(web.viewer),
    ) -> Response:
        errors: dict[str, str] = {}
        chosen: RunStatus | None = None
        if status.strip():
            try:
                chosen = RunStatus(status.strip().upper())
            except ValueError:
                errors["status"] = (
                    f"status {status!r} is not a run status; use one of {', '.join(STATUSES)}"
                )
        start = _time_filter(since, "since", errors)
        end = _time_filter(until, "until", errors)
        filters = {
            "workflow": workflow,
            "status": chosen.value if chosen else status,
            "since": since,
            "until": until,
            "since_type": "datetime-local" if not since or _looks_local(since) else "text",
            "until_type": "datetime-local" if not until or _looks_local(until) else "text",
        }
        rows: list[dict[str, Any]] = []
        if not errors:
            runs = await app.list_runs(
                chosen, workflow.strip() or None, RUNS_LIMIT, since=start, until=end
            )
            costs = await _costs(web, workflow.strip() or None, start)
            rows = [
                {
                    "run": r,
                    "href": "/runs/" + url_id(r.id),
                    "duration": run_duration(r),
                    "cost": costs.get(r.id),
                }
                for r in runs
            ]
        return web.page(
            request,
            "runs.html",
            status=422 if errors else 200,
            rows=rows,
            f=filters,
            errors=errors,
            statuses=STATUSES,
            limit=RUNS_LIMIT,
            money=money,
        )

    @router.get("/runs/{run_id:path}", response_class=HTMLResponse)
    async def run_page(request: Request, run_id: str, s: Session = Depends(web.viewer)) -> Response:
        run = await app.get_run(run_id)
        steps = await app.steps(run_id)
        roots = journal_tree(steps)
        initial, fields = initial_state(web, run.workflow)
        stateful = (
            initial is not None or run.state is not None or any(r.state_delta for r in steps)
        )
        if stateful:
            fold_states(roots, initial or {}, fields)
        requests = await requests_of(web, run)
        by_key = {n.key: n for root in roots for n in root.walk()}
        for req in requests:
            node = by_key.get(str(req.get("step") or ""))
            if node is not None:
                node.requests.append(req)
        trace_error = None
        try:
            rows = layout(await app.trace(run_id))
        except Exception as exc:  # the journal still renders without the trace
            log.warning("trace of run %s unavailable: %s", run_id, exc, exc_info=True)
            rows, trace_error = [], f"{type(exc).__name__}: {exc}"
        return web.page(
            request,
            "run.html",
            run=run,
            steps=len(steps),
            journal=trim(roots),
            stateful=stateful,
            initial_known=initial is not None,
            initial=initial,
            requests=requests,
            waterfall=rows,
            trace_error=trace_error,
            cost=await app.store.spent(run_id=run.id),
            duration=run_duration(run),
            money=money,
        )


async def _costs(web: Web, workflow: str | None, since: float | None) -> dict[str, float]:
    """Metered model cost per run id (runs without model calls are absent)."""
    try:
        report = await web.app.store.usage_report("run", workflow=workflow, since=since)
    except Exception as exc:  # a store without usage metering still lists its runs
        log.warning("usage report unavailable: %s", exc)
        return {}
    return {str(r["run"]): float(r["cost_usd"] or 0.0) for r in report}
