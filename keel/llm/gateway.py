"""The LLM gateway: model aliases, routing, fallbacks with cool-downs, rate limits, cost
budgets and a response cache, all in front of `litellm.acompletion`."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Any

from keel.errors import (
    BudgetExceeded,
    ConfigError,
    ModelUnavailable,
    call_window,
    mark_call_window,
)
from keel.llm import _litellm
from keel.llm.cache import cache_get, cache_key, cache_put
from keel.llm.cassette import MOCKS, Cassette, request_key
from keel.llm.cassette import PROVIDER as CASSETTE_PROVIDER
from keel.llm.ratelimit import RateLimiter
from keel.llm.scripted import PROVIDER as SCRIPTED_PROVIDER
from keel.llm.scripted import ScriptedModel
from keel.llm.types import LLMResponse, Message
from keel.policy.retry import Retry, is_transient, retry_after_of


@dataclass
class ModelSpec:
    """One model behind an alias.

    Example: `ModelSpec("openai/gpt-4o-mini", rpm=500, tpm=200_000, params={"temperature": 0})`
    """

    target: str | ScriptedModel
    rpm: float | None = None
    tpm: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    structured: str = "json_schema"  # or "tool": a forced tool call for structured output

    @property
    def model(self) -> str:
        return self.target.model if isinstance(self.target, ScriptedModel) else self.target

    @property
    def price_model(self) -> str:
        if isinstance(self.target, ScriptedModel):
            return self.target.price_as or ""
        return self.target


@dataclass
class Budgets:
    """Spending limits in USD, checked before a call is sent.

    Example: `Budgets(per_run=0.50, per_workflow_day={"triage": 20.0})`
    """

    per_run: float | None = None
    per_workflow_day: float | dict[str, float] | None = None
    per_tenant_day: float | None = None

    def workflow_limit(self, workflow: str) -> float | None:
        if isinstance(self.per_workflow_day, dict):
            return self.per_workflow_day.get(workflow)
        return self.per_workflow_day


@dataclass
class CallContext:
    """Who is calling: for routing, budgets and metering."""

    workflow: str = ""
    name: str = ""
    run_id: str = ""
    tenant: str | None = None
    store: Any = None  # keel.store.Store


@dataclass
class BudgetHold:
    """A call's place in its budgets' queue: `Gateway.release` it once its usage is stored."""

    ticket: int
    scopes: list[str]


class Gateway:
    """Every model call a workflow makes goes through one of these.

    Example:
        gateway = keel.llm.Gateway(
            models={"fast": "openai/gpt-4o-mini", "smart": "anthropic/claude-sonnet-4-5"},
            default="fast",
            routes={"triage.draft": "smart"},           # workflow.call-name -> alias
            fallbacks={"smart": ["fast"]},
            budgets=keel.llm.Budgets(per_run=0.25),
            context_budget=8000,                        # tokens of context per call
        )
        app = keel.App(llm=gateway)
    """

    def __init__(
        self,
        models: dict[str, str | ScriptedModel | ModelSpec] | None = None,
        *,
        default: str | None = None,
        routes: dict[str, str] | None = None,
        fallbacks: dict[str, list[str]] | None = None,
        cooldown: float = 30.0,
        retry: Retry | None = None,
        budgets: Budgets | None = None,
        cache: bool | None = None,
        cache_ttl: float | None = 24 * 3600,
        redis_url: str | None = None,
        cassette: Cassette | None = None,
        context_budget: int | None = None,
    ) -> None:
        # Tokens of context per call (keel.llm.context); None: the model's window.
        if context_budget is not None and (
            not isinstance(context_budget, int) or context_budget <= 0
        ):
            raise ConfigError(
                f"context_budget is a positive number of tokens, not {context_budget!r}"
            )
        self.context_budget = context_budget
        self.models: dict[str, ModelSpec] = {}
        for alias, spec in (models or {}).items():
            self.models[alias] = spec if isinstance(spec, ModelSpec) else ModelSpec(spec)
        env_model = os.environ.get("KEEL_MODEL")
        if env_model:  # a real model for every call, e.g. KEEL_MODEL=openai/gpt-4o-mini
            self.models = {
                alias: ModelSpec(env_model, s.rpm, s.tpm, s.params, s.structured)
                for alias, s in self.models.items()
            }
            self.models.setdefault("default", ModelSpec(env_model))
        if default is None and len(self.models) == 1:
            default = next(iter(self.models))
        self.default = default or ("default" if "default" in self.models else None)
        self.routes = dict(routes or {})
        self.fallbacks = {k: list(v) for k, v in (fallbacks or {}).items()}
        self.cooldown = cooldown
        self.retry = retry or Retry(attempts=3, backoff=1.0, max_backoff=30.0)
        self.budgets = budgets or Budgets()
        self.cache_enabled = cache
        self.cache_ttl = cache_ttl
        self.redis_url = redis_url
        self.cassette = cassette
        self._cooling: dict[str, float] = {}
        self._limiters: dict[str, RateLimiter] = {}
        # Spend reserved per budget scope, by ticket: estimates while a call is out, then
        # its real cost until the caller has stored it. Earlier tickets go first.
        self._inflight: dict[str, dict[int, float]] = {}
        self._tickets = itertools.count()
        self._redis: Any = None
        self._ready = False
        for alias, chain in self.fallbacks.items():
            for name in [alias, *chain]:
                if name not in self.models and "/" not in name:
                    raise ConfigError(f"fallback chain of {alias!r} names unknown model {name!r}")

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Gateway:
        """A gateway from a `[keel.llm]` table of keel.toml.

        Example keel.toml:
            [keel.llm]
            default = "fast"
            fallbacks = { smart = ["fast"] }
            [keel.llm.models]
            fast = "openai/gpt-4o-mini"
            smart = { model = "anthropic/claude-sonnet-4-5", rpm = 50, tpm = 100000 }
            [keel.llm.budgets]
            per_run = 0.50
        """
        known = {
            "models",
            "default",
            "routes",
            "fallbacks",
            "cooldown",
            "budgets",
            "cache",
            "cache_ttl",
            "redis_url",
            "retry",
            "cassette",
            "context_budget",
        }
        unknown = set(cfg) - known
        if unknown:
            raise ConfigError(
                f"[keel.llm] has unknown keys {sorted(unknown)}; known: {sorted(known)}"
            )
        models: dict[str, str | ScriptedModel | ModelSpec] = {}
        for alias, value in (cfg.get("models") or {}).items():
            if isinstance(value, str):
                models[alias] = value
            elif isinstance(value, dict) and "model" in value:
                extra = {
                    k: v for k, v in value.items() if k not in ("model", "rpm", "tpm", "structured")
                }
                models[alias] = ModelSpec(
                    value["model"],
                    rpm=value.get("rpm"),
                    tpm=value.get("tpm"),
                    params=extra,
                    structured=value.get("structured", "json_schema"),
                )
            else:
                raise ConfigError(
                    f"[keel.llm.models] {alias} must be a model string or a table with model = ..."
                )
        retry = cfg.get("retry")
        return cls(
            models,
            default=cfg.get("default"),
            routes=cfg.get("routes"),
            fallbacks=cfg.get("fallbacks"),
            cooldown=float(cfg.get("cooldown", 30.0)),
            retry=Retry(**retry) if isinstance(retry, dict) else None,
            budgets=Budgets(**(cfg.get("budgets") or {})),
            cache=None if cfg.get("cache") is None else bool(cfg["cache"]),
            cache_ttl=cfg.get("cache_ttl", 24 * 3600),
            redis_url=cfg.get("redis_url"),
            cassette=Cassette(cfg["cassette"]) if cfg.get("cassette") else None,
            context_budget=cfg.get("context_budget"),
        )

    @classmethod
    def of(cls, llm: Any) -> Gateway:
        """What `keel.App(llm=...)` accepts: a Gateway, a ScriptedModel or a model string."""
        if isinstance(llm, Gateway):
            return llm
        if isinstance(llm, ScriptedModel | str | ModelSpec):
            return cls(models={"default": llm}, default="default")
        if isinstance(llm, dict):
            return cls.from_config(llm)
        raise ConfigError(
            f"keel.App(llm=...) takes a Gateway, a ScriptedModel or a model "
            f"name, not {type(llm).__name__}"
        )

    # -- setup ------------------------------------------------------------------------

    def _setup(self) -> None:
        if self._ready:
            return
        from keel.llm import cassette as cassette_mod
        from keel.llm import scripted

        _litellm.register_provider(SCRIPTED_PROVIDER, scripted.provider())
        if self.cassette is not None:
            _litellm.register_provider(CASSETTE_PROVIDER, cassette_mod.provider())
        if self.redis_url:
            import redis.asyncio as aioredis

            self._redis = aioredis.from_url(self.redis_url)
        self._ready = True

    def spec(self, alias: str) -> ModelSpec:
        spec = self.models.get(alias)
        if spec is not None:
            return spec
        if "/" in alias or alias.startswith("gpt") or alias.startswith("claude"):
            return ModelSpec(alias)  # a raw LiteLLM model string
        known = ", ".join(sorted(self.models)) or "none"
        raise ConfigError(f"unknown model {alias!r} (aliases: {known})")

    def route(self, model: str | None, cc: CallContext) -> list[str]:
        """The aliases to try, in order: the chosen model, then its fallbacks."""
        alias = (
            model
            or self.routes.get(f"{cc.workflow}.{cc.name}")
            or self.routes.get(cc.workflow)
            or self.default
        )
        if alias is None:
            raise ConfigError(
                "no model chosen: pass model=..., set Gateway(default=...), or set KEEL_MODEL"
            )
        chain = [alias, *self.fallbacks.get(alias, [])]
        return list(dict.fromkeys(chain))

    def supports_logprobs(self, model: str | None, cc: CallContext) -> bool:
        """Whether the routed model returns token logprobs (LiteLLM's parameter map);
        offline models always can."""
        try:
            spec = self.spec(self.route(model, cc)[0])
        except ConfigError:
            return True
        if isinstance(spec.target, ScriptedModel) or self.cassette is not None:
            return True
        try:
            supported = _litellm.litellm().get_supported_openai_params(model=spec.model)
        except Exception:
            return True
        return supported is None or "logprobs" in supported

    def _limiter(self, alias: str, spec: ModelSpec) -> RateLimiter | None:
        if not spec.rpm and not spec.tpm:
            return None
        lim = self._limiters.get(alias)
        if lim is None:
            lim = self._limiters[alias] = RateLimiter(spec.rpm, spec.tpm, self._redis, alias)
        return lim

    # -- the call ---------------------------------------------------------------------

    async def complete(
        self,
        messages: list[Message],
        cc: CallContext,
        *,
        model: str | None = None,
        params: dict[str, Any] | None = None,
        cache: bool | None = None,
        held: list[BudgetHold] | None = None,
    ) -> LLMResponse:
        """Send one chat completion through routing, limits, budgets, cache and fallbacks.

        With `held`, the call's cost stays counted against its budgets (appended to
        `held`) until the caller, having stored the usage, passes it to `release`.
        """
        if not self._ready:
            # Importing LiteLLM takes seconds: do it off the event loop so other runs
            # keep going while the first model call warms up.
            await asyncio.to_thread(_litellm.litellm)
            self._setup()
        params = dict(params or {})
        last: BaseException | None = None
        tried: list[str] = []
        chain = self.route(model, cc)
        now = time.monotonic()
        over: BudgetExceeded | None = None
        sent: list[float] = []  # start and end of the provider calls that failed
        for alias in chain:
            if self._cooling.get(alias, 0.0) > now and alias != chain[-1]:
                tried.append(f"{alias} (cooling down)")
                continue
            spec = self.spec(alias)
            call_params = {**spec.params, **params}
            try:
                resp = await self._one(alias, spec, messages, call_params, cc, cache, held)
            except BudgetExceeded as exc:
                # Not sent: a cheaper model later in the chain may still fit the budget.
                over = over or exc
                tried.append(f"{alias} (over budget)")
                continue
            except Exception as exc:
                last = exc
                tried.append(alias)
                sent += call_window(exc) or ()
                if not is_transient(exc):
                    if sent:  # the calls it came from, fallbacks' included
                        mark_call_window(exc, min(sent), max(sent))
                    raise
                self._cooling[alias] = time.monotonic() + self.cooldown
                continue
            resp.tried = [*tried, alias]
            return resp
        if over is not None and last is None:
            raise over  # every model was refused by the budget: none was sent
        # The last model of a chain is always tried, cooling or not, so the cool-downs say
        # nothing about when a retry could succeed: only the provider's own Retry-After
        # does (None leaves the wait to the step's Retry backoff).
        failed = ModelUnavailable(
            f"no model could answer: tried {', '.join(tried) or 'none'}"
            + (f"; last error {type(last).__name__}: {last}" if last else ""),
            retry_after=retry_after_of(last) if last is not None else None,
            tried=tried,
        )
        if sent:
            mark_call_window(failed, min(sent), max(sent))
        raise failed from last

    async def _one(
        self,
        alias: str,
        spec: ModelSpec,
        messages: list[Message],
        params: dict[str, Any],
        cc: CallContext,
        cache: bool | None,
        held: list[BudgetHold] | None = None,
    ) -> LLMResponse:
        target = spec.model
        use_cache = self._caches(spec) if cache is None else cache
        key = cache_key(target, messages, params) if use_cache else None
        if key is not None:
            hit = await cache_get(key, self._redis, cc.store)
            if hit is not None:
                hit.cache_hit, hit.cost_usd, hit.latency_ms = True, 0.0, 0.0
                hit.started_at = time.time()  # answered here and now: no provider call
                return hit
        scopes = self._limit_scopes(cc)
        # Counting tokens costs ~0.1 ms: only when a budget or a token limit needs it.
        prompt_tokens = (
            _litellm.count_tokens(spec.price_model or "gpt-4o-mini", messages=messages)
            if (scopes and spec.price_model) or spec.tpm
            else 0
        )
        reserved = self._reserve(spec, prompt_tokens, params, cc, scopes)
        try:
            await self._check_budgets(cc, reserved)
            limiter = self._limiter(alias, spec)
            if limiter is not None:
                await limiter.acquire(prompt_tokens + int(params.get("max_tokens") or 0))
            # The call's own time, journaled: its trace span is this, not the step's setup.
            sent_at, started = time.time(), time.perf_counter()
            try:
                resp = await self._send(target, messages, params)
            except BaseException as exc:
                mark_call_window(exc, sent_at, sent_at + time.perf_counter() - started)
                raise
            resp.started_at = sent_at
            resp.latency_ms = round((time.perf_counter() - started) * 1000, 3)
            resp.model = target
            # the provider behind the model (LiteLLM names custom ones, and a cassette, itself)
            resp.provider = _litellm.provider_of(target) or resp.provider
            resp.cost_usd = (
                _litellm.price(spec.price_model, resp.usage.input_tokens, resp.usage.output_tokens)
                if spec.price_model
                else 0.0
            )
        except BaseException:
            self.release(reserved)
            raise
        if held is None:
            self.release(reserved)
        elif reserved is not None:
            # Until the usage row is stored, count the real cost in flight: released
            # earlier, a concurrent call could see neither and overshoot the budget.
            for scope in reserved.scopes:
                self._inflight[scope][reserved.ticket] = resp.cost_usd
            held.append(reserved)
        resp.request = {"messages": messages, "params": params}
        if key is not None:
            await cache_put(key, resp, self._redis, cc.store, self.cache_ttl)
        return resp

    async def _send(
        self, target: str, messages: list[Message], params: dict[str, Any]
    ) -> LLMResponse:
        lib = _litellm.litellm()
        kwargs = dict(params)
        if self.cassette is not None and not target.startswith(SCRIPTED_PROVIDER):
            rkey = request_key(target, messages, params)
            if self.cassette.mode == "replay":
                # A miss is a CassetteMiss here, not a provider error LiteLLM would wrap
                # as a (transient) connection failure to retry and fall back from.
                self.cassette.lookup(rkey, target, messages)
                for mock in MOCKS:  # the cassette answers, not a mock
                    kwargs.pop(mock, None)
                kwargs["metadata"] = {
                    "keel_cassette": self.cassette.id,
                    "keel_request": rkey,
                    "keel_model": target,
                }
                raw = await lib.acompletion(
                    model=f"{CASSETTE_PROVIDER}/{target}", messages=messages, **kwargs
                )
                return _litellm.convert(raw, target)
            raw = await lib.acompletion(model=target, messages=messages, **kwargs)
            self.cassette.record(rkey, target, messages, raw.model_dump())
            return _litellm.convert(raw, target)
        raw = await lib.acompletion(model=target, messages=messages, **kwargs)
        return _litellm.convert(raw, target)

    # -- budgets ----------------------------------------------------------------------

    def _limit_scopes(self, cc: CallContext) -> list[tuple[str, float, dict[str, Any]]]:
        b = self.budgets
        day = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        since = day.timestamp()
        scopes: list[tuple[str, float, dict[str, Any]]] = []
        if b.per_run is not None and cc.run_id:
            scopes.append((f"run:{cc.run_id}", b.per_run, {"run_id": cc.run_id}))
        limit = b.workflow_limit(cc.workflow)
        if limit is not None and cc.workflow:
            scopes.append(
                (f"wf:{cc.workflow}:{since}", limit, {"workflow": cc.workflow, "since": since})
            )
        if b.per_tenant_day is not None and cc.tenant:
            scopes.append(
                (
                    f"tenant:{cc.tenant}:{since}",
                    b.per_tenant_day,
                    {"tenant": cc.tenant, "since": since},
                )
            )
        return scopes

    def _reserve(
        self,
        spec: ModelSpec,
        prompt_tokens: int,
        params: dict[str, Any],
        cc: CallContext,
        scopes: list[tuple[str, float, dict[str, Any]]],
    ) -> BudgetHold | None:
        if not spec.price_model or not scopes:
            return None
        expected_out = int(params.get("max_tokens") or 256)
        estimate = _litellm.price(spec.price_model, prompt_tokens, expected_out)
        hold = BudgetHold(next(self._tickets), [scope for scope, _, _ in scopes])
        for scope in hold.scopes:
            self._inflight.setdefault(scope, {})[hold.ticket] = estimate
        return hold

    def release(self, hold: BudgetHold | None) -> None:
        """Stop counting a call's reserved spend (once its usage is stored, or it failed)."""
        if hold is None:
            return
        for scope in hold.scopes:
            tickets = self._inflight.get(scope)
            if tickets is not None:
                tickets.pop(hold.ticket, None)
                if not tickets:
                    del self._inflight[scope]  # keeps the dict from growing per run

    async def _check_budgets(self, cc: CallContext, hold: BudgetHold | None) -> None:
        if cc.store is None or hold is None:
            return
        for scope, limit, filters in self._limit_scopes(cc):
            spent = await cc.store.spent(**filters)
            # Calls reserved before this one, and this one's estimate: a burst of
            # concurrent calls lets the first ones through instead of refusing them all.
            ahead = sum(v for t, v in self._inflight.get(scope, {}).items() if t <= hold.ticket)
            projected = spent + ahead
            if projected > limit:
                what = scope.split(":")[0]
                raise BudgetExceeded(
                    f"this call would take the {what} budget of ${limit:.4f} to "
                    f"${projected:.4f} (spent ${spent:.4f} + in flight and this call's "
                    f"estimate ${ahead:.4f}); it was not sent",
                    budget=limit,
                    spent=spent,
                    scope=what,
                )

    # -- cache ------------------------------------------------------------------------

    def _caches(self, spec: ModelSpec) -> bool:
        """Whether a call to this model uses the cache when the call does not say.

        By default only real models are cached. A scripted model's answers come from
        code, and a cassette is itself the record of answers: a cache (which outlives
        the run, in the store) would hide an edit to either behind stale answers, and
        in record mode keep a cassette from recording. `cache=True` caches them too.
        """
        if self.cache_enabled is not None:
            return self.cache_enabled
        return self.cassette is None and not spec.model.startswith(SCRIPTED_PROVIDER + "/")

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
            self._ready = False
