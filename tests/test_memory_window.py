"""The working-memory assembler: budgets, pinned blocks, tool pairs, order, the record.

Property tests draw random blocks and budgets; the counter is keel's offline byte bound
(`ByteCounter`), real code, deterministic. tests/test_memory_tokens.py checks the LiteLLM
tokenizer path against the same assembler.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keel
from keel.errors import ConfigError
from keel.memory import Block, Window
from keel.memory.tokens import ByteCounter
from keel.memory.window import KINDS

COUNTER = ByteCounter()
_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=600)


@st.composite
def conversations(draw: Any) -> list[dict[str, Any]]:
    """Turns: user text, assistant text, or an assistant tool call and its results."""
    out: list[dict[str, Any]] = []
    for t in range(draw(st.integers(1, 12))):
        shape = draw(st.sampled_from(["user", "assistant", "calls"]))
        if shape == "calls":
            n = draw(st.integers(1, 3))
            ids = [f"c{t}_{j}" for j in range(n)]
            calls = [
                {"id": i, "type": "function", "function": {"name": "f", "arguments": "{}"}}
                for i in ids
            ]
            out.append({"role": "assistant", "content": None, "tool_calls": calls})
            out.extend({"role": "tool", "tool_call_id": i, "content": draw(_text)} for i in ids)
        else:
            out.append({"role": shape, "content": draw(_text)})
    return out


@st.composite
def blocks(draw: Any) -> list[Block]:
    out = []
    for i in range(draw(st.integers(0, 7))):
        kind = draw(st.sampled_from(sorted(KINDS)))
        content = draw(conversations()) if draw(st.booleans()) else draw(_text)
        out.append(
            Block(
                f"b{i}",
                content,
                kind=kind,
                priority=draw(st.none() | st.integers(0, 100)),
                pinned=draw(st.none() | st.booleans()),
            )
        )
    return out


def _check_pairs(messages: list[dict[str, Any]]) -> None:
    """Every tool result follows its call, and every call has all its results."""
    pending: set[str] = set()
    for m in messages:
        if m["role"] == "tool":
            assert m["tool_call_id"] in pending, f"orphan tool result {m}"
            pending.discard(m["tool_call_id"])
            continue
        assert not pending, f"tool calls {pending} lost their results"
        pending = {c["id"] for c in m.get("tool_calls") or []}
    assert not pending, f"tool calls {pending} lost their results"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks(), st.integers(1, 4000), st.booleans())
def test_never_over_budget_pairs_whole_pinned_present_order_kept(
    bs: list[Block], budget: int, with_tools: bool
) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    tools_arg = tools if with_tools else None
    pinned_need = sum(COUNTER.count(b.messages()) for b in bs if b.is_pinned)
    pinned_need += COUNTER.count([], tools) if with_tools else 0
    try:
        fit = Window(budget, counter=COUNTER).assemble(bs, tools=tools_arg)
    except keel.ContextOverflow as exc:
        assert pinned_need > budget
        for b in bs:
            if b.is_pinned:
                assert b.name in exc.message
        assert str(budget) in exc.message
        return
    assert pinned_need <= budget
    assert fit.tokens <= budget
    assert COUNTER.count(fit.messages, tools_arg) <= budget
    _check_pairs(fit.messages)
    # pinned blocks whole; messages in the order of the blocks, and of each block
    index = {b.name: i for i, b in enumerate(bs)}
    owners = [index[n] for n in fit.sources]
    assert owners == sorted(owners)
    for b in bs:
        mine = [m for m, n in zip(fit.messages, fit.sources, strict=True) if n == b.name]
        if b.is_pinned:
            assert mine == b.messages()
        if isinstance(b.content, list):
            pos = [next(j for j, x in enumerate(b.content) if x is m) for m in mine]
            assert pos == sorted(pos)
    # the record accounts for every block, and its tokens add up
    assert [d.name for d in fit.decisions] == [b.name for b in bs]
    assert sum(d.tokens for d in fit.decisions) + fit.tools_tokens == fit.tokens
    for d, b in zip(fit.decisions, bs, strict=True):
        if b.is_pinned:
            assert d.action == "included"
        if d.action == "dropped":
            assert d.tokens == 0 and "needs" in d.reason


def test_low_priority_goes_first_and_the_record_says_why() -> None:
    bs = [
        Block("task", "Answer the customer", kind="task"),
        Block("order", "x" * 400, kind="previous"),
        Block("facts", "y" * 400, kind="memory"),
    ]
    need = sum(COUNTER.count(b.messages()) for b in bs[:2])
    fit = Window(need + 20, counter=COUNTER).assemble(bs)
    assert fit.names("included") == ["task", "order"]
    assert fit.names("dropped") == ["facts"]
    dropped = fit.decisions[2]
    assert dropped.full == COUNTER.count(bs[2].messages()) and "priority 50" in dropped.reason


def test_a_long_text_block_is_cut_and_marked() -> None:
    bs = [Block("task", "t", kind="task"), Block("out", "word " * 500, kind="previous")]
    fit = Window(300, counter=COUNTER).assemble(bs)
    assert fit.names("truncated") == ["out"]
    assert fit.messages[1]["content"].endswith("[… truncated to fit the context budget]")
    assert fit.tokens <= 300


def test_history_keeps_the_newest_turns_with_their_tool_results() -> None:
    turns: list[dict[str, Any]] = []
    for i in range(10):
        turns.append({"role": "user", "content": f"question {i} " + "q" * 50})
        turns.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"c{i}",
                        "type": "function",
                        "function": {"name": "f", "arguments": "{}"},
                    }
                ],
            }
        )
        turns.append({"role": "tool", "tool_call_id": f"c{i}", "content": "r" * 100})
    bs = [Block("task", "t", kind="task"), Block("history", turns, kind="history")]
    fit = Window(600, counter=COUNTER).assemble(bs)
    kept = fit.messages[1:]
    assert kept and kept[-1] is turns[-1]  # the newest
    assert kept == turns[len(turns) - len(kept) :]  # a contiguous tail
    _check_pairs(fit.messages)
    assert "newest" in fit.decisions[1].reason


def test_pinned_overflow_names_the_blocks_and_counts() -> None:
    bs = [Block("task", "a" * 500, kind="task"), Block("schema", "b" * 500, kind="schema")]
    with pytest.raises(keel.ContextOverflow) as err:
        Window(100, counter=COUNTER).assemble(bs)
    msg = err.value.message
    assert "task: " in msg and "schema: " in msg and "budget of 100" in msg
    assert err.value.data["pinned"]["task"] == COUNTER.count(bs[0].messages())


def test_bad_input_is_refused_clearly() -> None:
    with pytest.raises(ConfigError, match="positive number of tokens"):
        Window(0)
    with pytest.raises(ConfigError, match="unknown kind 'fact'"):
        Block("x", "y", kind="fact")  # type: ignore[arg-type]
    orphan = [{"role": "tool", "tool_call_id": "c9", "content": "r"}]
    with pytest.raises(ConfigError, match="no assistant tool call before it"):
        Window(100, counter=COUNTER).assemble([Block("h", orphan, kind="history")])
    with pytest.raises(ConfigError, match="repeated: a"):
        Window(100, counter=COUNTER).assemble([Block("a", "1"), Block("a", "2")])


def test_same_blocks_same_messages() -> None:
    bs = [Block("task", "t", kind="task"), Block("out", "word " * 500, kind="previous")]
    a = Window(300, counter=COUNTER).assemble(bs)
    b = Window(300, counter=COUNTER).assemble(bs)
    assert a.messages == b.messages and a.record() == b.record()


def test_facts_and_fields_blocks() -> None:
    class Hit:
        def __init__(self, text: str) -> None:
            self.text = text

    facts = Block.facts("memory", [Hit("prefers email"), "lives in Lyon"])
    assert facts.content == "- prefers email\n- lives in Lyon" and facts.kind == "memory"
    fields = Block.fields("session", {"plan": "pro", "seats": 3})
    assert fields.content == 'plan: "pro"\nseats: 3' and fields.kind == "session"
    with pytest.raises(ConfigError, match=r"has a \.text string"):
        Block.facts("memory", [42])
