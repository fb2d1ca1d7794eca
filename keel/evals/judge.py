"""`judge`: an LLM judge scorer, for what code cannot decide (is the reply polite, does
it answer the question). Its calls go through the model gateway, so they are metered,
cached like any real model's calls, and replayed from a cassette offline."""

from __future__ import annotations

import json
import re
from typing import Any

from keel.errors import ConfigError
from keel.evals.dataset import Case
from keel.evals.run import EvalRun, Score, Scorer

_PROMPT = """You grade one run of an AI workflow against a rubric.

<rubric>
{rubric}
</rubric>

<input>
{input}
</input>

<expected>
{expected}
</expected>

<output>
{output}
</output>

Answer with JSON only: {{"score": a number from 0 to 1, "reason": "one sentence"}}"""


def _verdict(text: str, model: str) -> tuple[float, str]:
    found = re.search(r"\{.*\}", text or "", re.S)
    try:
        data = json.loads(found.group(0) if found else text)
        value = float(data["score"])
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            f"the judge model {model!r} answered {text[:120]!r}, not JSON with a numeric"
            ' "score"; use a model that follows the format, or check its cassette'
        ) from None
    return min(1.0, max(0.0, value)), str(data.get("reason") or "")


def judge(
    rubric: str,
    model: str | None = None,
    *,
    gateway: Any = None,
    pass_at: float = 0.5,
    name: str = "judge",
) -> Scorer:
    """An LLM judge: sends the rubric, the case's input and expectation and the run's
    result to `model` (an alias of `gateway`, else of the app's gateway), and scores
    with the `score` and `reason` it answers. Passes at `pass_at` or above.

    Example:
        judge("The reply greets the customer by name and promises a next step.",
              model="judge", gateway=keel.llm.Gateway(models={"judge": "openai/gpt-4o"},
              cassette=keel.llm.Cassette("tests/cassettes/judge.jsonl")))
    """

    own: list[Any] = []  # `gateway` as a Gateway, made once (a ScriptedModel is wrapped)

    async def score(case: Case, run: EvalRun) -> Score:
        from keel.llm.gateway import CallContext, Gateway

        if gateway is not None and not own:
            own.append(Gateway.of(gateway))
        gw = own[0] if own else getattr(run.app, "gateway", None)
        if gw is None:
            raise ConfigError(
                "judge() has no model: pass judge(..., gateway=keel.llm.Gateway(...)) or"
                " give the suite's app a gateway"
            )
        prompt = _PROMPT.format(
            rubric=rubric.strip(),
            input=json.dumps(case.input, sort_keys=True, default=str),
            expected=json.dumps(case.expected, sort_keys=True, default=str),
            output=json.dumps(run.result, sort_keys=True, default=str),
        )
        cc = CallContext(workflow="keel.evals", name=name, store=run.app.store)
        resp = await gw.complete([{"role": "user", "content": prompt}], cc, model=model)
        value, reason = _verdict(resp.content or "", model or "default")
        return Score(value=value, passed=value >= pass_at, reason=reason)

    return Scorer(name, score)
