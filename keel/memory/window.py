"""Working memory: fit a model call's context into a token budget, and say how.

A call's context is a list of `Block`s (the task, the schema being filled, the previous
step's output, selected session fields, long-term hits, recent history). `Window.assemble`
keeps every pinned block, then gives the rest of the budget by priority: a block that
fits goes in whole; a text block of a kind that may be cut is truncated; history keeps
its newest turns, a tool call always with its results; anything else is dropped. The
messages come out in the order the blocks were given (the journal's), and the
`Assembly` records what went in, what was cut and what was left out, with token counts.

Pure and synchronous: the same blocks and budget give the same messages, so a replayed
run assembles exactly the context its first attempt did.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from keel.errors import ConfigError, ContextOverflow
from keel.memory.tokens import Counter, Message, TokenCounter

Kind = Literal["task", "schema", "previous", "session", "memory", "history", "note"]
Action = Literal["included", "truncated", "dropped"]

KINDS: dict[str, int] = {  # kind -> default priority (higher is kept first)
    "task": 100,
    "schema": 100,
    "previous": 80,
    "session": 60,
    "memory": 50,
    "note": 50,
    "history": 40,
}
# Text a model can use in part: a long tool output or a list of facts, cut at the end.
# The task and the schema are not cut (half a schema is a wrong schema); history keeps
# whole turns instead.
TRUNCATABLE = frozenset({"previous", "session", "memory", "note"})
_MARK = "\n[… truncated to fit the context budget]"


@dataclass(frozen=True)
class Block:
    """One piece of a model call's context.

    `content` is text (one message with `role`) or messages. `pinned` blocks are always
    sent (the default for kinds "task" and "schema"); the others are kept by `priority`
    (default by kind, see `KINDS`).

    Example:
        Block("task", "Refund order A-17 if it arrived damaged", kind="task")
    """

    name: str
    content: str | list[Message]
    kind: Kind = "note"
    priority: int | None = None
    pinned: bool | None = None
    role: str = "user"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(
                f"block {self.name!r}: unknown kind {self.kind!r}; use one of {', '.join(KINDS)}"
            )
        if not isinstance(self.content, str | list):
            raise ConfigError(
                f"block {self.name!r}: content is text or a list of messages, "
                f"not {type(self.content).__name__}"
            )

    @classmethod
    def facts(cls, name: str, hits: Sequence[Any], *, kind: Kind = "memory") -> Block:
        """Long-term memory hits (anything with `.text`) as one block, a line each, in
        the order given (best first: a cut drops the least relevant).

        Example:
            Block.facts("memory", await ctx.memory.search(question, min_relevance=0.5))
        """
        lines = []
        for h in hits:
            text = getattr(h, "text", h)
            if not isinstance(text, str):
                raise ConfigError(
                    f"block {name!r}: a fact is a string or has a .text string, not {h!r}"
                )
            lines.append(f"- {text}")
        return cls(name, "\n".join(lines), kind=kind)

    @classmethod
    def fields(cls, name: str, values: Mapping[str, Any], *, kind: Kind = "session") -> Block:
        """Selected session fields as one block, `key: value` (JSON) a line.

        Example:
            Block.fields("session", {"plan": await ctx.session.get("plan")})
        """
        lines = [
            f"{k}: {json.dumps(v, ensure_ascii=False, default=str)}" for k, v in values.items()
        ]
        return cls(name, "\n".join(lines), kind=kind)

    @property
    def is_pinned(self) -> bool:
        """Whether the block is always sent."""
        return self.pinned if self.pinned is not None else self.kind in ("task", "schema")

    @property
    def rank(self) -> int:
        """Its priority (explicit, else its kind's)."""
        return self.priority if self.priority is not None else KINDS[self.kind]

    def messages(self) -> list[Message]:
        """The block as chat messages."""
        if isinstance(self.content, str):
            return [{"role": self.role, "content": self.content}]
        return list(self.content)


@dataclass(frozen=True)
class Decision:
    """What the assembler did with one block, and why."""

    name: str
    kind: str
    action: Action
    tokens: int  # what it takes in the context (0 when dropped)
    full: int  # what it would have taken whole
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """JSON for the journal and the trace."""
        return {
            "name": self.name,
            "kind": self.kind,
            "action": self.action,
            "tokens": self.tokens,
            "full": self.full,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Assembly:
    """The assembled messages and the record of how they were chosen."""

    messages: list[Message]
    budget: int
    tokens: int  # an upper bound of the messages' (and tools') tokens
    decisions: list[Decision] = field(default_factory=list)
    tools_tokens: int = 0
    exact: bool = True  # False: counted by the offline byte bound
    sources: list[str] = field(default_factory=list)  # the block each message came from

    def names(self, action: Action) -> list[str]:
        """Names of the blocks that got `action`."""
        return [d.name for d in self.decisions if d.action == action]

    def record(self) -> dict[str, Any]:
        """JSON of the decisions, as journaled with the model step."""
        return {
            "budget": self.budget,
            "tokens": self.tokens,
            "tools_tokens": self.tools_tokens,
            "exact": self.exact,
            "blocks": [d.as_dict() for d in self.decisions],
        }


def _units(block: Block) -> list[list[Message]]:
    """The block's messages in indivisible units: an assistant message with tool calls
    and the tool results answering it form one unit; any other message is one alone."""
    units: list[list[Message]] = []
    open_ids: set[str] = set()
    for m in block.messages():
        if not isinstance(m, dict) or "role" not in m:
            raise ConfigError(f"block {block.name!r}: a message is a dict with a 'role', not {m!r}")
        if m["role"] == "tool":
            call_id = m.get("tool_call_id")
            if str(call_id) not in open_ids or not units:
                raise ConfigError(
                    f"block {block.name!r}: tool result for call {call_id!r} has no assistant "
                    "tool call before it in the same block; keep a tool call and its results "
                    "in one block (the assembler never separates them)"
                )
            units[-1].append(m)
            continue
        calls = m.get("tool_calls") or []
        open_ids = {str(c.get("id")) for c in calls if isinstance(c, dict)}
        units.append([m])
    return units


class Window:
    """A per-call token budget and the assembler that keeps a context within it.

    Example:
        window = Window(2000)
        fit = window.assemble([
            Block("task", "Summarise the customer's issue", kind="task"),
            Block("order", big_json_text, kind="previous"),
            Block("history", past_messages, kind="history"),
        ])
        fit.messages, fit.names("dropped")
    """

    def __init__(
        self, budget: int, *, counter: Counter | None = None, model: str | None = None
    ) -> None:
        if not isinstance(budget, int) or isinstance(budget, bool) or budget <= 0:
            raise ConfigError(f"a context budget is a positive number of tokens, not {budget!r}")
        self.budget = budget
        self.counter: Counter = counter if counter is not None else TokenCounter(model)

    def assemble(
        self, blocks: Sequence[Block], *, tools: Sequence[Message] | None = None
    ) -> Assembly:
        """Fit `blocks` (and the request's `tools` schemas) into the budget.

        Raises `keel.ContextOverflow` when the pinned blocks and tools alone exceed it.
        """
        names = [b.name for b in blocks]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ConfigError(f"context blocks need distinct names; repeated: {', '.join(dup)}")
        count = self.counter.count
        units = [_units(b) for b in blocks]
        sizes = [[count(u) for u in us] for us in units]
        tools_tokens = count([], tools) if tools else 0
        pinned = [i for i, b in enumerate(blocks) if b.is_pinned]
        used = tools_tokens + sum(sum(sizes[i]) for i in pinned)
        if used > self.budget:
            parts = ", ".join(f"{blocks[i].name}: {sum(sizes[i])}" for i in pinned)
            if tools_tokens:
                parts += f"{', ' if parts else ''}tool schemas: {tools_tokens}"
            raise ContextOverflow(
                f"the pinned context needs {used} tokens ({parts}), over the budget of "
                f"{self.budget}; raise budget=, shorten the pinned blocks, or unpin what the "
                "call can do without",
                budget=self.budget,
                tokens=used,
                pinned={blocks[i].name: sum(sizes[i]) for i in pinned},
                tools_tokens=tools_tokens,
            )
        kept: dict[int, list[Message]] = {i: units_flat(units[i]) for i in pinned}
        decisions: dict[int, Decision] = {
            i: Decision(
                blocks[i].name, blocks[i].kind, "included", sum(sizes[i]), sum(sizes[i]), "pinned"
            )
            for i in pinned
        }
        # Highest priority first; on a tie the later block (the newer one) first.
        order = sorted(
            (i for i, b in enumerate(blocks) if not b.is_pinned),
            key=lambda i: (-blocks[i].rank, -i),
        )
        for i in order:
            b, full, room = blocks[i], sum(sizes[i]), self.budget - used
            if full <= room:
                kept[i], decisions[i] = (
                    units_flat(units[i]),
                    _decide(b, "included", full, full, f"priority {b.rank}"),
                )
                used += full
            elif b.kind == "history" and len(units[i]) > 1:
                msgs, took, n = _newest(units[i], sizes[i], room)
                if n:
                    kept[i] = msgs
                    used += took
                    total = sum(len(u) for u in units[i])
                    decisions[i] = _decide(
                        b,
                        "truncated",
                        took,
                        full,
                        f"kept the newest {len(msgs)} of {total} messages ({n} of "
                        f"{len(units[i])} turns, tool calls with their results); {full} "
                        f"tokens whole, {room} left",
                    )
                else:
                    decisions[i] = _dropped(b, full, room)
            elif b.kind in TRUNCATABLE and isinstance(b.content, str):
                cut = _truncate(b, room, count)
                if cut is None:
                    decisions[i] = _dropped(b, full, room)
                else:
                    kept[i], took = [cut[0]], cut[1]
                    used += took
                    decisions[i] = _decide(
                        b,
                        "truncated",
                        took,
                        full,
                        f"cut at the end to {took} of {full} tokens ({room} left; a "
                        f"{b.kind} block may be cut)",
                    )
            else:
                decisions[i] = _dropped(b, full, room)
        order_kept = [i for i in range(len(blocks)) if i in kept]
        messages = [m for i in order_kept for m in kept[i]]
        sources = [blocks[i].name for i in order_kept for _ in kept[i]]
        exact = getattr(self.counter, "exact", True)
        return Assembly(
            messages,
            self.budget,
            used,
            [decisions[i] for i in range(len(blocks))],
            tools_tokens,
            bool(exact),
            sources,
        )


def units_flat(units: list[list[Message]]) -> list[Message]:
    """The messages of `units`, in order."""
    return [m for u in units for m in u]


def _decide(b: Block, action: Action, tokens: int, full: int, reason: str) -> Decision:
    return Decision(b.name, b.kind, action, tokens, full, reason)


def _dropped(b: Block, full: int, room: int) -> Decision:
    return _decide(
        b,
        "dropped",
        0,
        full,
        f"priority {b.rank}: needs {full} tokens, {room} left after the pinned and "
        "higher-priority blocks",
    )


def _newest(
    units: list[list[Message]], sizes: list[int], room: int
) -> tuple[list[Message], int, int]:
    """The newest whole units that fit in `room` (a contiguous tail: no gaps in a
    conversation), their tokens and how many."""
    took, start = 0, len(units)
    while start > 0 and took + sizes[start - 1] <= room:
        start -= 1
        took += sizes[start]
    return units_flat(units[start:]), took, len(units) - start


def _truncate(b: Block, room: int, count: Any) -> tuple[Message, int] | None:
    """The block's text cut at the end so that it fits `room`, with a mark; None when not
    even the mark fits. Binary search over the text's length."""
    assert isinstance(b.content, str)
    text = b.content

    def msg(n: int) -> Message:
        return {"role": b.role, "content": text[:n] + _MARK}

    if count([msg(0)]) > room:
        return None
    lo, hi = 0, len(text)  # msg(lo) fits; find the largest such lo
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count([msg(mid)]) <= room:
            lo = mid
        else:
            hi = mid - 1
    m = msg(lo)
    return m, count([m])


__all__ = ["Assembly", "Block", "Decision", "Window"]
