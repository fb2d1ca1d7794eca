"""Structured output: a Pydantic schema in, a validated instance out, with a confidence.

Confidence, exactly: when the provider returns token logprobs, the score is the
geometric-mean probability of the output tokens, exp(mean(logprob)), over every
token of the answer (JSON punctuation included). Without logprobs and with
`samples=n`, it is self-consistency: the share of n answers (the first plus n-1
more samples) that equal the first one after validation.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel, ValidationError

from keel.errors import validation_problems
from keel.llm.types import LLMResponse, Message


def response_format(schema: type[BaseModel]) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()},
    }


def forced_tool(schema: type[BaseModel]) -> dict[str, Any]:
    return {
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": schema.__name__,
                    "description": schema.__doc__ or f"Return a {schema.__name__}",
                    "parameters": schema.model_json_schema(),
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": schema.__name__}},
    }


def raw_answer(resp: LLMResponse) -> str:
    """The JSON text of a structured answer (content, or the forced tool call's arguments)."""
    if resp.tool_calls:
        return resp.tool_calls[0].arguments
    return (resp.content or "").strip()


def parse(schema: type[BaseModel], text: str) -> tuple[BaseModel | None, list[str]]:
    """Validate `text` as `schema`: the instance, or readable messages about what is wrong."""
    body = text
    if body.startswith("```"):  # models like to fence JSON
        body = body.strip("`")
        body = body[body.find("{") :] if "{" in body else body
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        return None, [f"the reply is not valid JSON ({exc.msg} at position {exc.pos})"]
    try:
        return schema.model_validate(data), []
    except ValidationError as exc:
        return None, validation_problems(exc, "(root)")


def feedback_messages(resp: LLMResponse, problems: list[str]) -> list[Message]:
    """What the next attempt sees: its last answer and why it was rejected."""
    return [
        resp.assistant_message()
        if not resp.tool_calls
        else {"role": "assistant", "content": raw_answer(resp)},
        {
            "role": "user",
            "content": "Your previous answer was rejected:\n"
            + "\n".join(f"- {p}" for p in problems)
            + "\nReply again with only the corrected JSON.",
        },
    ]


def logprob_confidence(resp: LLMResponse) -> float | None:
    if not resp.logprobs:
        return None
    return math.exp(sum(resp.logprobs) / len(resp.logprobs))


def agreement(first: BaseModel, others: list[BaseModel | None]) -> float:
    same = 1 + sum(1 for o in others if o is not None and o == first)
    return same / (1 + len(others))
