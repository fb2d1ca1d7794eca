"""Token counts: LiteLLM's tokenizer (offline, tiktoken files from the package), tool-call
JSON and tool schemas included; the offline bound never under the real count."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from keel.llm._litellm import litellm
from keel.memory import Block, Window
from keel.memory.tokens import TokenCounter, context_window, fallback_count

MODEL = "openai/gpt-4o-mini"


def _call(arguments: str) -> dict[str, Any]:
    fn = {"name": "lookup", "arguments": arguments}
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": fn}],
    }


def test_tool_call_arguments_and_tool_schemas_are_counted() -> None:
    counter = TokenCounter(MODEL)
    small = counter.count([_call("{}")])
    big = counter.count([_call('{"q": "' + "lorem ipsum " * 50 + '"}')])
    assert big > small + 90  # 100 words of arguments
    msgs = [{"role": "user", "content": "hi"}]
    tools = [
        {
            "type": "function",
            "function": {"name": "lookup", "description": "find an order " * 30, "parameters": {}},
        }
    ]
    assert counter.count(msgs, tools) > counter.count(msgs) + 80
    assert counter.exact


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=400))
def test_the_offline_bound_never_under_counts(text: str) -> None:
    for msg in ({"role": "user", "content": text}, _call(text)):
        real = litellm().token_counter(model=MODEL, messages=[msg])
        assert fallback_count([msg]) >= real


def test_the_offline_bound_holds_where_bytes_over_three_does_not() -> None:
    msg = {"role": "user", "content": "x " * 300}
    real = litellm().token_counter(model=MODEL, messages=[msg])
    assert real > len("x " * 300) / 3  # the naive estimate would under-count
    assert fallback_count([msg]) >= real


def test_an_assembly_is_under_budget_by_the_models_own_count() -> None:
    history: list[dict[str, Any]] = []
    for i in range(30):
        history.append(_call(f'{{"order": "A-{i}"}}'))
        history[-1]["tool_calls"][0]["id"] = f"c{i}"
        history.append({"role": "tool", "tool_call_id": f"c{i}", "content": "status ok " * 80})
    blocks = [
        Block("system", "You are a support agent.", kind="task", role="system"),
        Block("task", "Check every order", kind="task"),
        Block("history", history, kind="history"),
    ]
    fit = Window(2000, model=MODEL).assemble(blocks)
    whole = litellm().token_counter(model=MODEL, messages=fit.messages)
    assert whole <= fit.tokens <= 2000
    assert fit.names("truncated") == ["history"]


def test_context_window_of_known_and_unknown_models() -> None:
    assert context_window(MODEL, reserve=4096) == 128000 - 4096
    assert context_window("scripted/nobody-knows") is None


@st.composite
def _turns(draw: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, 15))):
        args = draw(st.text(max_size=200))
        out.append(_call(json.dumps({"q": args})))
        out[-1]["tool_calls"][0]["id"] = f"c{i}"
        out.append(
            {"role": "tool", "tool_call_id": f"c{i}", "content": draw(st.text(max_size=800))}
        )
    return out


@settings(max_examples=40, deadline=None)
@given(_turns(), st.integers(60, 3000))
def test_assemblies_fit_the_models_own_count(history: list[dict[str, Any]], budget: int) -> None:
    blocks = [Block("task", "Go.", kind="task"), Block("history", history, kind="history")]
    fit = Window(budget, model=MODEL).assemble(blocks)
    assert litellm().token_counter(model=MODEL, messages=fit.messages) <= fit.tokens <= budget


def test_a_calls_default_budget() -> None:
    from keel.llm import Gateway, ScriptedModel
    from keel.llm.context import budget_for
    from keel.llm.gateway import CallContext

    real = Gateway({"fast": "openai/gpt-4o-mini"})
    cc = CallContext("wf", "text")
    assert budget_for(real, None, cc, {}) == 128000 - 4096  # the window minus the reserve
    assert budget_for(real, None, cc, {"max_tokens": 1000}) == 127000
    scripted = Gateway({"m": ScriptedModel(lambda m: "x")})
    assert budget_for(scripted, None, cc, {}) is None  # no window known: sent as is
    fixed = Gateway({"fast": "openai/gpt-4o-mini"}, context_budget=5000)
    assert budget_for(fixed, None, cc, {}) == 5000
    assert (
        Gateway.from_config(
            {"models": {"m": "openai/gpt-4o"}, "context_budget": 900}
        ).context_budget
        == 900
    )
