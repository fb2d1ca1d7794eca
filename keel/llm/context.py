"""The working-memory assembler applied to a model call (see keel.memory.window).

A call's messages become pinned blocks (its leading system messages, then its prompt or
task), the caller's `blocks=` go between them, and an agent's turns after the task are
its history: newest kept, tool calls with their results. The budget is the call's
`budget=`, else the gateway's `context_budget`, else the routed model's context window
(LiteLLM's model map) minus the reply's reserve; a model no one knows the window of
(scripted, a private deployment) gets no assembly unless a budget is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from keel.errors import ConfigError
from keel.llm.types import Message

if TYPE_CHECKING:
    from keel.llm.gateway import CallContext, Gateway
    from keel.memory.tokens import TokenCounter
    from keel.memory.window import Assembly, Block

_windows: dict[tuple[str, int | None], int | None] = {}
# One counter per model, so an agent's turns reuse the counts of the history they share.
_counters: dict[str, TokenCounter] = {}


def routed_model(gateway: Gateway, model: str | None, cc: CallContext) -> str | None:
    """The LiteLLM model string the call goes to first (None for a scripted model)."""
    from keel.llm.scripted import ScriptedModel

    try:
        spec = gateway.spec(gateway.route(model, cc)[0])
    except ConfigError:
        return None
    return None if isinstance(spec.target, ScriptedModel) else spec.model


def budget_for(
    gateway: Gateway, model: str | None, cc: CallContext, params: dict[str, Any]
) -> int | None:
    """The call's default token budget: the gateway's, else the model's window minus the
    reply's reserve (`max_tokens`, else up to 4,096), else None (no assembly)."""
    if gateway.context_budget is not None:
        return gateway.context_budget
    target = routed_model(gateway, model, cc)
    if target is None:
        return None
    reserve = params.get("max_tokens")
    key = (target, reserve if isinstance(reserve, int) else None)
    if key not in _windows:
        from keel.memory.tokens import context_window

        _windows[key] = context_window(target, key[1])
    return _windows[key]


def check_blocks(blocks: Sequence[Block] | None) -> list[Block]:
    """`blocks=` as a list of `keel.memory.Block`s, or a clear error."""
    from keel.memory.window import Block

    out = list(blocks or [])
    for b in out:
        if not isinstance(b, Block):
            raise ConfigError(
                f"blocks= takes keel.memory.Block objects, not {type(b).__name__}; e.g. "
                "Block('order', text, kind='previous')"
            )
    return out


def parts(
    messages: list[Message], blocks: list[Block], history_from: int | None = None
) -> list[Block]:
    """One call's context as blocks: leading system messages and the prompt (or an
    agent's task) pinned, `blocks` between them, the turns from `history_from` on as
    history."""
    from keel.memory.window import Block

    lead = 0
    while lead < len(messages) and messages[lead].get("role") == "system":
        lead += 1
    end = len(messages) if history_from is None else max(history_from, lead)
    out: list[Block] = []
    if lead:
        out.append(Block("system", messages[:lead], kind="task"))
    out.extend(blocks)
    if end > lead:
        out.append(Block("prompt", messages[lead:end], kind="task"))
    if end < len(messages):
        out.append(Block("history", messages[end:], kind="history"))
    return out


def assemble(
    messages: list[Message],
    blocks: list[Block],
    budget: int,
    model: str | None,
    tools: list[dict[str, Any]] | None,
    history_from: int | None = None,
) -> Assembly:
    """Fit one call's context (see `parts`) into `budget` tokens."""
    from keel.memory.tokens import TokenCounter
    from keel.memory.window import Window

    counter = _counters.get(model or "")
    if counter is None:
        counter = _counters.setdefault(model or "", TokenCounter(model))
    window = Window(budget, counter=counter)
    return window.assemble(parts(messages, blocks, history_from), tools=tools)


def blocks_digest(blocks: list[Block]) -> list[dict[str, Any]]:
    """The blocks as journaled inputs (what the step's digest covers)."""
    return [
        {
            "name": b.name,
            "kind": b.kind,
            "content": b.content,
            "priority": b.rank,
            "pinned": b.is_pinned,
            "role": b.role,
        }
        for b in blocks
    ]
