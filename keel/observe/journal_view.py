"""A run's journal as a tree, with the state after every step: what `keel show` and the
console's run page display. Pure data (no Rich, no web), so both read it the same way.

Example:
    view = journal_view(run, await app.steps(run.id), initial=State().model_dump(mode="json"))
    for node in view.nodes():
        print(node.key, node.changed, node.state)

**The tree.** Records nest by scope: a step's children are the records whose scope is
`<its key>/` (map items, gather branches, phase attempts, a person's decisions). A map,
gather or phase writes its own record only when it ends, so while it runs its finished
children hang under a placeholder node (`rec` None) at the end of its scope.

**Which step a change belongs to.** A record's `state_delta` holds what the workflow
changed in that scope since the previous step of the scope was committed (usually what
it did with that step's result); it is written with the *next* step to save a write. So
each delta is credited to the step before the record holding it (`Node.changed`), and
`Node.state` is the state after the step *and* those changes, as the next step saw it.
Changes before a scope's first step belong to the scope's start: the run's start
(`JournalView.start`), or the map item, gather branch or phase attempt. A phase shares
its parent's state: what was changed before it began is recorded with its first step,
and a copy with attempt 0's outcome record; that copy is credited to the step before the
phase (while attempt 0 runs, the whole first delta is). The changes after the run's last
step are in no delta, only in the run's state snapshot (`RunInfo.state`, written when the
run finishes or waits): for such runs the difference is credited to the last step (or,
in a waiting run, to the step before the one it waits in).

**The fold** restores state the way replay does (`StateTracker`, `apply_delta`): each
delta is applied to its state object as of that object's previous delta. Map items and
gather branches work on copies forked from the parent's state as the map began (the
map's own delta holds what changed before it began); phase attempts share the parent's
state and each restarts from the phase's start; the phase's own delta holds what its
last attempt changed after its last step; a person's resolution of a phase escalation
sets the fields it names.

A map item, gather branch or phase attempt is a scope of its own: its `state` is the
state it ended with (a failed attempt's changes after its last step were undone and are
in no record), and its `changed` the changes made before its first step.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from keel.engine.state import apply_delta, changed_fields
from keel.types import RunInfo, RunStatus, StepKind, StepRecord, StepStatus

InitialFrom = Literal["workflow", "final state", "none"]

# Runs whose state snapshot is the state as the run last left it (a running or
# cancelled run's snapshot may be older than its journal).
_SNAPSHOT_CURRENT = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.WAITING)
_MISSING = object()


@dataclass(eq=False)
class Node:
    """One journal entry in the tree, or a placeholder (`rec` None) for one in progress."""

    key: str
    rec: StepRecord | None
    children: list[Node] = field(default_factory=list)
    state: dict[str, Any] | None = None  # the state after this step and the changes after it
    changed: list[str] = field(default_factory=list)  # fields changed after this step
    partial: bool = False  # forked from a map in progress: changes just before it unknown
    requests: list[dict[str, Any]] = field(default_factory=list)  # the console's links
    more: int = 0  # children left off by `trim`, before child number `more_at`
    more_at: int = 0
    more_failed: int = 0
    more_open: int = 0

    @property
    def name(self) -> str:
        """The key's last segment: `double#1`, `map:item#0`, `0` for a map item."""
        return self.key.rsplit("/", 1)[-1]

    @property
    def kind(self) -> StepKind | None:
        return self.rec.kind if self.rec is not None else guess_kind(self.key)

    @property
    def open(self) -> bool:
        """Not finished: a placeholder, or a step waiting (a timer, signal or person)."""
        return self.rec is None or self.rec.status is StepStatus.PENDING

    @property
    def duration(self) -> float | None:
        rec = self.rec
        if rec is None or rec.ended_at is None:
            return None
        return max(rec.ended_at - rec.started_at, 0.0)

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            yield from child.walk()


@dataclass
class JournalView:
    """The journal tree of one run, with the state folded into it (see the module doc)."""

    start: Node  # the run's start: `children` are the top-level steps
    initial: dict[str, Any] | None  # the state the run began with
    initial_from: InitialFrom  # where `initial` came from
    stateful: bool  # the workflow has state (the fold ran)

    @property
    def roots(self) -> list[Node]:
        return self.start.children

    def nodes(self) -> Iterator[Node]:
        """Every node, depth first, the run's start excluded."""
        for root in self.start.children:
            yield from root.walk()

    def by_key(self) -> dict[str, Node]:
        return {n.key: n for n in self.nodes()}


def journal_view(
    run: RunInfo,
    steps: Iterable[StepRecord],
    initial: dict[str, Any] | None = None,
    fields: set[str] | None = None,
) -> JournalView:
    """The journal of `run` as a tree with the state after every step.

    `initial` is the state a new run of its workflow starts with and `fields` its state
    model's fields, when the workflow is loaded. Without `initial`, a field no step
    changed is shown with its value in the run's final state (it cannot have changed
    before the last step); with no final state either, the state holds only the fields
    the steps changed.
    """
    steps = list(steps)
    start = Node("", None, build_tree(steps))
    final = run.state if run.status in _SNAPSHOT_CURRENT else None
    initial_from: InitialFrom = "workflow"
    if initial is None:
        if final is not None:
            touched: set[str] = set()
            for rec in _own_records(start):  # not a map item's copy: not in the snapshot
                touched |= set(changed_fields(rec.state_delta))
                if _is_resolution(rec):
                    touched |= set(_edits(rec.output) or {})
            initial = {k: v for k, v in final.items() if k not in touched}
            initial_from = "final state"
        else:
            initial_from = "none"
    stateful = (
        initial_from == "workflow" or run.state is not None or any(r.state_delta for r in steps)
    )
    if stateful:
        if fields is None and final is not None:
            fields = set(final)
        state = dict(initial or {})
        _Fold(final, fields).scope(start, start.children, state, _Tracker(state), True, True)
    return JournalView(start, initial, initial_from, stateful)


def starting_state(registry: Any, workflow: str) -> tuple[dict[str, Any] | None, set[str] | None]:
    """The state a new run of `workflow` starts with and its state model's fields, from
    an app's registry; (None, None) when the workflow is not registered there."""
    wf = registry.workflows.get(workflow)
    model = getattr(wf, "state", None) if wf is not None else None
    if model is None:
        return None, None
    try:
        value: dict[str, Any] = model().model_dump(mode="json")
    except Exception:  # a state model without defaults cannot start a run either
        return None, set(model.model_fields)
    return value, set(model.model_fields)


# -- the tree -----------------------------------------------------------------------------


def build_tree(steps: Iterable[StepRecord]) -> list[Node]:
    """The journal as a forest: each scope's steps by position, children under `key/`.

    A scope whose parent step is not recorded yet (a phase or map still in progress)
    gets a placeholder node (`rec` None) at the end of its own parent scope.
    """
    nodes: dict[str, Node] = {}
    scopes: dict[str, list[Node]] = {}
    for rec in steps:
        if rec.kind in (StepKind.MAP, StepKind.GATHER) and rec.status is StepStatus.PENDING:
            continue  # only the mark that a fan-out started (its item count): in progress
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


def trim(nodes: list[Node], limit: int) -> list[Node]:
    """The first `limit` children per scope and its last one (where it ended, and the
    changes after its last step); the ones between are counted on the parent (`more`,
    `more_failed`, `more_open`, shown before child `more_at`). Modifies nodes in place."""
    for node in nodes:
        if len(node.children) > limit + 2:
            rest = node.children[limit:-1]
            node.children = [*node.children[:limit], node.children[-1]]
            node.more_at = limit
            node.more = len(rest)
            node.more_open = sum(1 for n in rest if n.open)
            node.more_failed = sum(
                1 for n in rest if n.rec is not None and n.rec.status is StepStatus.ERROR
            )
        trim(node.children, limit)
    return nodes


# -- the state fold -----------------------------------------------------------------------


def _attempt(node: Node) -> bool:
    return node.kind is StepKind.PHASE and node.name.isdigit()


def _is_resolution(rec: StepRecord) -> bool:
    """A person's resolution of a phase escalation (`phase:x#0/resolution`)."""
    tail = rec.key.rsplit("/", 1)[-1]
    return (
        rec.kind is StepKind.SIGNAL
        and (tail == "resolution" or tail.startswith("resolution~"))  # later rounds: ~2, ~3
        and rec.scope.rsplit("/", 2)[-2].startswith("phase:")
    )


def _own_records(node: Node) -> Iterator[StepRecord]:
    """The records of the run's own state: below `node`, not inside a map or gather."""
    for child in node.children:
        if child.rec is not None:
            yield child.rec
        if child.kind not in (StepKind.MAP, StepKind.GATHER):
            yield from _own_records(child)


def _edits(output: Any) -> dict[str, Any] | None:
    if not isinstance(output, dict) or output.get("status") != "resolved":
        return None
    edits = output.get("result")
    return edits if isinstance(edits, dict) else None


@dataclass
class _Tracker:
    """One state object of the run (the run's own, or a map item's or branch's copy):
    `base` is its state as of its last recorded delta. A delta is what changed since
    then, so it is applied to `base`, not to the state the fold has credited so far."""

    base: dict[str, Any]


class _Fold:
    """One pass over the tree, crediting each recorded delta to the step before it."""

    def __init__(self, final: dict[str, Any] | None, fields: set[str] | None) -> None:
        self.final = final  # the run's snapshot, until its difference has been credited
        self.fields = fields
        self.skip: set[int] = set()  # nodes whose delta was credited ahead of them

    def credit(self, target: Node, state: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        """Move from `state` to `new`, crediting the fields that differ to `target`.
        (A resumed execution may record a field again with the value it already had.)"""
        moved = [k for k, v in new.items() if state.get(k, _MISSING) != v]
        if moved:
            target.changed += [k for k in moved if k not in target.changed]
            target.state = new
        return new

    def record(
        self, t: _Tracker, target: Node, state: dict[str, Any], delta: dict[str, Any] | None
    ) -> dict[str, Any]:
        """A recorded delta of tracker `t`, credited to `target`."""
        if not delta:
            return state
        new = apply_delta(t.base, delta)
        t.base = new
        return self.credit(target, state, new)

    def settle(self, target: Node, state: dict[str, Any]) -> dict[str, Any]:
        """Credit what the snapshot holds beyond the journal (changes no record holds yet)."""
        final, self.final = self.final, None
        if final is None:
            return state
        return self.credit(target, state, {**state, **final})

    def scope(
        self,
        owner: Node,
        members: list[Node],
        state: dict[str, Any],
        t: _Tracker,
        chain: bool,
        last: bool,
    ) -> tuple[dict[str, Any], Node]:
        """Fold one scope from `state`: the state at its end and the node later changes
        in it belong to. `chain`: the scope works on the run's own state (the root and its
        phases, not map items); `last`: nothing in the chain comes after it."""
        owner.state = state
        tail = owner
        for i, node in enumerate(members):
            if id(node) not in self.skip and not _has_attempts(node):
                state = self.record(t, tail, state, node.rec.state_delta if node.rec else None)
            known = True
            if node.open and not _has_attempts(node):
                # in progress: what changed before it is recorded only when it ends
                known = chain and self.final is not None
                if known:
                    state = self.settle(tail, state)
            state, after = self.visit(node, state, t, chain, last and i == len(members) - 1, tail)
            if not known and node.rec is None:
                for inner in node.walk():
                    inner.partial = True
            if node.kind is not StepKind.VALUE:  # recorded with the next write, no delta
                tail = after
        if chain and last and self.final is not None:
            state = self.settle(tail, state)
        return state, tail

    def visit(
        self, node: Node, state: dict[str, Any], t: _Tracker, chain: bool, last: bool, tail: Node
    ) -> tuple[dict[str, Any], Node]:
        kind = node.kind
        if kind is StepKind.VALUE:
            return state, node  # a recorded time or uuid: the state is the next step's
        if kind is StepKind.CHILD:
            # a map item or gather branch: its own copy, forked from the parent's state
            end, _ = self.scope(node, node.children, state, _Tracker(state), False, False)
            node.state = end
            return state, node
        if kind in (StepKind.MAP, StepKind.GATHER):
            node.state = state
            for item in node.children:
                self.visit(item, state, _Tracker(state), False, False, node)
            return state, node
        if _has_attempts(node):
            return self.phase(node, state, t, chain, last, tail)
        node.state = state
        for child in node.children:  # a person's decisions: scopes without state
            self.visit(child, state, t, False, False, node)
        return state, node

    def phase(
        self, node: Node, state: dict[str, Any], t: _Tracker, chain: bool, last: bool, tail: Node
    ) -> tuple[dict[str, Any], Node]:
        attempts = [c for c in node.children if _attempt(c)]
        first = attempts[0]
        if first.rec is not None:
            # attempt 0's outcome holds a copy of what was changed before it began (also
            # recorded, with more, by its first step): the phase's start
            start = self.credit(tail, state, apply_delta(t.base, first.rec.state_delta))
        else:
            # still running: credit what its first step recorded before the phase
            start = state
            lead = _first_record(first)
            if lead is not None:
                assert lead.rec is not None
                start = self.record(t, tail, state, lead.rec.state_delta)
                self.skip.add(id(lead))
        cur = start
        inner = tail
        # a resolution followed by another escalation round was refused by the run
        rounds = [i for i, c in enumerate(node.children) if c.name.startswith("escalation")]
        for i, child in enumerate(node.children):
            if _attempt(child):
                final = child is attempts[-1]
                if child is not first:  # each attempt restarts from the phase's start
                    t.base = start
                end, inner = self.scope(
                    child, child.children, start, t, chain, last and final and node.rec is None
                )
                if final and node.rec is not None:  # changed after its last step
                    end = self.record(t, inner, end, node.rec.state_delta)
                child.state = cur = end
            elif child.rec is not None and _is_resolution(child.rec):
                refused = any(r > i for r in rounds)
                edits = None if refused else _edits(child.rec.output)
                if edits and self.fields is not None:
                    edits = {k: v for k, v in edits.items() if k in self.fields}
                child.state = cur
                if edits:
                    cur = self.credit(child, cur, apply_delta(cur, edits))
                    t.base = cur  # applying the edits counts as recorded
            else:
                self.visit(child, cur, t, False, False, node)
        node.state = cur
        return cur, (node if node.rec is not None else inner)


def _has_attempts(node: Node) -> bool:
    return (
        node.kind is StepKind.PHASE
        and not _attempt(node)
        and any(_attempt(c) for c in node.children)
    )


def _first_record(attempt: Node) -> Node | None:
    """The record holding what was changed before `attempt` began: its first step."""
    lead = attempt.children[0] if attempt.children else None
    if lead is None or lead.rec is None or _has_attempts(lead):
        return None  # a phase it begins with credits its own start
    return lead
