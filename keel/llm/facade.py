"""`ctx.llm`: model calls as journaled steps — text, structured output and agent loops.

Each model turn is one step (kind `llm`) recording the request, the response, the
model that answered, usage, cost, cache hit and latency. Replay returns the
recorded turn, so a resumed run never re-sends a completed model call.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from keel.engine.recovery import StepPolicy
from keel.engine.registry import Tool, ToolDef
from keel.engine.serde import unannotated
from keel.errors import (
    AgentTurnLimit,
    ConfigError,
    ContextOverflow,
    KeelError,
    LowConfidence,
    ValidationFailed,
    validation_problems,
)
from keel.llm import context as wm
from keel.llm import structured as so
from keel.llm.gateway import BudgetHold, CallContext, Gateway
from keel.llm.types import LLMResponse, Message, as_messages
from keel.policy.fallback import Fallback
from keel.policy.validation import normalise, run_checks
from keel.types import StepKind

if TYPE_CHECKING:
    from keel.engine.context import Context
    from keel.engine.plugins import People
    from keel.memory.window import Block
    from keel.store.base import Store

S = TypeVar("S", bound=BaseModel)


@dataclass
class AgentResult:
    """How an agent loop ended: the final answer and the conversation that led to it."""

    content: str | None
    messages: list[Message]
    turns: int
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    invalid_calls: int = 0


class LLM:
    """Model calls from a workflow. Reach it as `ctx.llm`.

    Example:
        label = await ctx.llm.structured(Label, prompt=f"Classify: {text}", min_confidence=0.8)
        reply = await ctx.llm.text(f"Draft a reply about {label.category}", model="smart")
    """

    def __init__(
        self,
        ctx: Context,
        gateway: Gateway,
        *,
        store: Store | None = None,
        people: People | None = None,
    ) -> None:
        self.ctx = ctx
        self.gateway = gateway
        self.store = store  # where budgets read spend (None: no store-backed budgets)
        self.people = people  # where a low-confidence output goes for review

    # -- one journaled model turn -------------------------------------------------------

    async def complete(
        self,
        messages: list[Message],
        *,
        model: str | None = None,
        name: str = "text",
        cache: bool | None = None,
        fallback: Fallback | None = None,
        tools: list[dict[str, Any]] | None = None,
        budget: int | None = None,
        blocks: Sequence[Block] | None = None,
        **params: Any,
    ) -> Any:
        """One model turn as a journaled step; the full `LLMResponse`.

        `blocks` (keel.memory.Block) go between the system messages and the prompt; the
        whole context is fitted into `budget` tokens (default: the gateway's
        `context_budget`, else the model's window), and how is recorded on the response
        (`.context`), the step and its span. When the call fails for good (e.g.
        `keel.BudgetExceeded`) and `fallback` is `Fallback.degrade(default)`, the step
        records and returns `default` instead (a person's answer for `Fallback.human()`).
        """
        return await self._turn(
            messages, model, name, cache, fallback, tools, budget, blocks, None, params
        )

    async def _turn(
        self,
        messages: list[Message],
        model: str | None,
        name: str,
        cache: bool | None,
        fallback: Fallback | None,
        tools: list[dict[str, Any]] | None,
        budget: int | None,
        blocks: Sequence[Block] | None,
        history_from: int | None,
        params: dict[str, Any],
    ) -> Any:
        extra = wm.check_blocks(blocks)
        if tools:
            params = {**params, "tools": tools}
        ctx = self.ctx
        cc = CallContext(
            workflow=ctx.workflow, name=name, run_id=ctx.run_id, tenant=ctx.tenant, store=self.store
        )
        gateway = self.gateway
        held: list[BudgetHold] = []  # this step's cost, counted until it is stored
        shown: dict[str, Any] = {"messages": messages, "model": model, "params": params}
        inputs: tuple[Any, ...] = (messages, model, params)
        if extra or budget is not None:  # journaled inputs; calls without them keep old digests
            shown.update(blocks=wm.blocks_digest(extra), budget=budget)
            inputs = (*inputs, shown["blocks"], budget)
        op = ctx.operation(f"llm:{name}", *inputs, kind=StepKind.LLM, shown=shown)
        sent, context = messages, None
        if not op.done:  # a replay returns the recorded turn: nothing to assemble
            limit = budget if budget is not None else wm.budget_for(gateway, model, cc, params)
            if limit is None:
                if extra:
                    sent = [m for b in wm.parts(messages, extra) for m in b.messages()]
            else:
                try:
                    fit = wm.assemble(
                        messages,
                        extra,
                        limit,
                        wm.routed_model(gateway, model, cc),
                        tools,
                        history_from,
                    )
                except ContextOverflow as exc:
                    await op.fail(exc)
                sent, context = fit.messages, fit.record()

        async def call() -> LLMResponse:
            resp = await gateway.complete(
                sent, cc, model=model, params=params, cache=cache, held=held
            )
            resp.context = context
            op.meter(
                model=resp.model,
                input_tokens=resp.usage.input_tokens,
                output_tokens=resp.usage.output_tokens,
                cost_usd=resp.cost_usd,
                cache_hit=resp.cache_hit,
            )
            return resp

        # the call as data too: an executor whose effects run elsewhere (a Temporal
        # activity worker) rebuilds it from this instead of running the closure here
        request = {
            "messages": sent,
            "model": model,
            "params": params,
            "cache": cache,
            "context": context,
            "call": {"workflow": cc.workflow, "name": name, "run_id": cc.run_id},
            "tenant": cc.tenant,
        }
        policy = StepPolicy(
            retry=gateway.retry, fallback=fallback, input=shown, extra={"model_call": request}
        )
        try:
            out = await op.run(call, LLMResponse if fallback is None else unannotated(), policy)
        finally:
            for h in held:
                gateway.release(h)
        return _response_or_fallback(out)

    async def text(
        self,
        prompt: str | list[Message],
        model: str | None = None,
        *,
        system: str | None = None,
        name: str = "text",
        budget: int | None = None,
        blocks: Sequence[Block] | None = None,
        **params: Any,
    ) -> str:
        """A text completion; the reply's text (a `fallback=`'s default if it applied).

        `blocks` and `budget`: the context, fitted into a token budget (see `complete`).
        """
        resp = await self.complete(
            as_messages(prompt, system),
            model=model,
            name=name,
            budget=budget,
            blocks=blocks,
            **params,
        )
        if not isinstance(resp, LLMResponse):  # degraded: the fallback's value
            return resp  # type: ignore[no-any-return]
        return resp.content or ""

    # -- structured output --------------------------------------------------------------

    async def structured(
        self,
        schema: type[S],
        prompt: str | list[Message],
        model: str | None = None,
        *,
        min_confidence: float | None = None,
        validate: Any = None,
        retries: int = 2,
        samples: int | None = None,
        system: str | None = None,
        name: str = "structured",
        on_low_confidence: str = "review",
        review_queue: str = "low_confidence",
        review_timeout: float | None = None,
        **params: Any,
    ) -> S:
        """A `schema` instance, parsed and validated, retried with the errors as feedback.

        With `min_confidence`, an output whose confidence (see keel.llm.structured) is
        lower goes to a person in `review_queue`, who confirms or corrects it; with
        `on_low_confidence="raise"` it raises `keel.LowConfidence` (output and score).
        """
        if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
            raise ConfigError(f"structured() takes a Pydantic model class, not {schema!r}")
        messages = as_messages(prompt, system)
        checks = normalise(validate)
        spec_mode = "json_schema"
        try:
            chosen = self.gateway.route(model, CallContext(self.ctx.workflow, name))[0]
            spec_mode = self.gateway.spec(chosen).structured
        except ConfigError:
            pass
        shape = (
            so.forced_tool(schema)
            if spec_mode == "tool"
            else {"response_format": so.response_format(schema)}
        )
        call_params = {**params, **shape}
        if min_confidence is not None and samples is None:
            if self.gateway.supports_logprobs(model, CallContext(self.ctx.workflow, name)):
                call_params.setdefault("logprobs", True)
            else:  # no logprobs from this provider: confidence by self-consistency
                samples = 3
        problems: list[str] = []
        resp: LLMResponse | None = None
        for _ in range(retries + 1):
            resp = await self.complete(messages, model=model, name=name, **call_params)
            if not isinstance(resp, LLMResponse):  # degraded: the fallback's value
                return resp  # type: ignore[no-any-return]
            value, problems = so.parse(schema, so.raw_answer(resp))
            if value is not None and checks:
                value, problems = run_checks(value, checks)
            if not problems and value is not None:
                result: S = value  # type: ignore[assignment]
                score = await self._confidence(
                    resp,
                    result,
                    schema,
                    messages,
                    model,
                    name,
                    call_params,
                    samples,
                    min_confidence,
                )
                if min_confidence is not None and score is not None and score < min_confidence:
                    people = self.people
                    if on_low_confidence == "review" and people is not None:
                        reviewed: S = await people.review_output(  # type: ignore[assignment]
                            self.ctx,
                            schema=schema,
                            output=result.model_dump(mode="json"),
                            score=score,
                            threshold=min_confidence,
                            prompt=messages,
                            queue=review_queue,
                            timeout=review_timeout,
                        )
                        return reviewed
                    raise LowConfidence(
                        f"{schema.__name__} output scored {score:.3f}, below the required "
                        f"{min_confidence}",
                        output=result.model_dump(mode="json"),
                        score=score,
                        threshold=min_confidence,
                        schema=schema.__name__,
                    )
                return result
            messages = [*messages, *so.feedback_messages(resp, problems)]
        assert resp is not None
        raise ValidationFailed(
            f"{schema.__name__} output still invalid after {retries + 1} attempt(s): "
            + "; ".join(problems),
            messages=problems,
            output=so.raw_answer(resp),
        )

    async def _confidence(
        self,
        resp: LLMResponse,
        first: BaseModel,
        schema: type[BaseModel],
        messages: list[Message],
        model: str | None,
        name: str,
        params: dict[str, Any],
        samples: int | None,
        min_confidence: float | None,
    ) -> float | None:
        score = so.logprob_confidence(resp)
        if score is not None or (min_confidence is None and not samples):
            return score
        n = samples or 3
        others: list[BaseModel | None] = []
        sample_params = {k: v for k, v in params.items() if k != "logprobs"}
        sample_params.setdefault("temperature", 1.0)
        for _ in range(n - 1):
            extra = await self.complete(
                messages, model=model, name=f"{name}.sample", cache=False, **sample_params
            )
            others.append(so.parse(schema, so.raw_answer(extra))[0])
        return so.agreement(first, others)

    # -- agent loop ---------------------------------------------------------------------

    async def agent(
        self,
        messages: str | list[Message],
        tools: list[Tool],
        *,
        max_turns: int = 8,
        model: str | None = None,
        system: str | None = None,
        invalid_call_budget: int = 3,
        name: str = "agent",
        budget: int | None = None,
        blocks: Sequence[Block] | None = None,
        **params: Any,
    ) -> AgentResult:
        """A tool-calling loop: every model turn and every tool call is its own step.

        Each turn's context is assembled within `budget` tokens (see `complete`): the
        system messages, `blocks` and the task pinned, then the newest turns that fit,
        a tool call always with its results; `AgentResult.messages` keeps them all.

        Arguments are validated against the tool's signature; invalid ones go back to
        the model as an error (counted against `invalid_call_budget`). Tools run with
        their own retry and fallback policies.
        """
        defs: dict[str, ToolDef] = {}
        for t in tools:
            d = t.definition if isinstance(t, Tool) else t
            if not isinstance(d, ToolDef):
                raise ConfigError(f"agent tools must be @app.tool functions, not {t!r}")
            defs[d.name] = d
        schemas = [_tool_schema(d) for d in defs.values()]
        convo = as_messages(messages, system)
        task_end = len(convo)  # what comes after the task is history, trimmed to fit
        cache, fallback = params.pop("cache", None), params.pop("fallback", None)
        invalid = 0
        calls: list[dict[str, Any]] = []
        for turn in range(1, max_turns + 1):
            resp = await self._turn(
                convo, model, name, cache, fallback, schemas, budget, blocks, task_end, params
            )
            if not isinstance(resp, LLMResponse):  # degraded: the fallback's value ends it
                content = resp if resp is None or isinstance(resp, str) else json.dumps(resp)
                return AgentResult(content, convo, turn, calls, invalid)
            convo.append(resp.assistant_message())
            if not resp.tool_calls:
                return AgentResult(resp.content, convo, turn, calls, invalid)
            for call in resp.tool_calls:
                tool = defs.get(call.name)
                problem, args = _check_call(tool, call.name, call.arguments, defs)
                if problem is not None:
                    invalid += 1
                    content = f"error: {problem}"
                    if invalid > invalid_call_budget:
                        raise AgentTurnLimit(
                            f"agent {name!r} made {invalid} invalid tool calls (budget "
                            f"{invalid_call_budget}); last: {problem}",
                            turns=turn,
                            invalid_calls=invalid,
                        )
                else:
                    assert tool is not None
                    try:
                        result = await self.ctx.call(Tool(tool), **args)
                        content = json.dumps(_jsonable(result))
                    except KeelError as exc:  # the tool failed for good: the model is told
                        content = f"error: tool {call.name} failed: {exc}"
                calls.append(
                    {
                        "turn": turn,
                        "tool": call.name,
                        "arguments": call.arguments,
                        "ok": problem is None,
                    }
                )
                convo.append({"role": "tool", "tool_call_id": call.id, "content": content})
        raise AgentTurnLimit(
            f"agent {name!r} did not finish within {max_turns} turns",
            turns=max_turns,
            invalid_calls=invalid,
        )


def _response_or_fallback(out: Any) -> Any:
    """A journaled model turn as an `LLMResponse`; anything else came from a fallback."""
    if isinstance(out, dict) and out.keys() >= _RESPONSE_FIELDS:
        return LLMResponse.model_validate(out)
    return out


# Fields every journaled LLMResponse has; fields added later (optional) are left out,
# so turns journaled before them still replay as responses.
_RESPONSE_FIELDS = frozenset(LLMResponse.model_fields) - {"started_at", "context"}


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


def _tool_schema(d: ToolDef) -> dict[str, Any]:
    parameters = d.input_model().model_json_schema()
    if '"$secret"' in json.dumps(parameters):
        # The model would pick the reference: one prompt injection away from a tool that
        # reveals any credential the worker can read.
        raise ConfigError(
            f"agent tool {d.name!r} takes a keel.Secret, and a model must not choose which "
            "credentials a tool reads; give the agent a tool without that parameter that "
            "reveals its secret itself (e.g. keel.Secret.env('NAME').reveal())"
        )
    return {
        "type": "function",
        "function": {
            "name": d.name,
            "description": (d.fn.__doc__ or d.name).strip(),
            "parameters": parameters,
        },
    }


def _check_call(
    tool: ToolDef | None, name: str, raw: str, defs: dict[str, ToolDef]
) -> tuple[str | None, dict[str, Any]]:
    if tool is None:
        return f"there is no tool named {name!r}; available: {', '.join(sorted(defs))}", {}
    try:
        data = json.loads(raw or "{}")
    except json.JSONDecodeError as exc:
        return f"arguments for {name} are not valid JSON ({exc.msg})", {}
    if not isinstance(data, dict):
        return f"arguments for {name} must be a JSON object", {}
    try:
        model = tool.input_model().model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(validation_problems(exc, "(arguments)"))
        return f"invalid arguments for {name}: {problems}", {}
    return None, {k: getattr(model, k) for k in type(model).model_fields}
