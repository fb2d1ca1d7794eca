"""Redaction and size limits for every payload Keel shows or exports: traces (local and
OTLP), logs, error messages, the CLI's and the console's renderings, notifications.

The journal keeps step inputs and outputs as they are (replay needs them); what leaves
it passes the App's `Redactor` (`keel.App(redactor=...)`, or `[keel.redact]` in
keel.toml): fields named like secrets, secret-looking values (API keys, bearer tokens,
private keys, card numbers, credentials in URLs), and `name=value` / `name: value` for
secret names inside free text become `[REDACTED]`; long values are truncated with a
marker. Strings without any trace of a secret (the common case) skip the regexes.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import pydantic_core

from keel.errors import ConfigError
from keel.types import Escalation, RunInfo, StepRecord, StructuredError

if TYPE_CHECKING:
    from keel.hitl.api import ReviewRequest

MASK = "[REDACTED]"

# Names (and globs) of fields whose values are masked whole. Matched case-insensitively
# after normalising: `X-Api-Key`, `apiKey`, `API_KEY` and `api.key` are all `x_api_key` /
# `api_key`. Also the names recognised in `name=value` text.
DEFAULT_FIELDS = (
    "*password*",
    "*passwd*",
    "*passphrase*",
    "pwd",
    "*secret*",
    "token",
    "*_token",
    "*api_key*",
    "*apikey*",
    "access_key",
    "*private_key*",
    "*credential*",
    "authorization",
    "proxy_authorization",
    "auth",
    "cookie",
    "set_cookie",
    "cvv",
    "cvc",
)
# Values that are secrets wherever they appear.
DEFAULT_PATTERNS = (
    r"sk-(?:proj-|ant-)?[A-Za-z0-9_\-]{16,}",  # OpenAI / Anthropic style keys
    r"\b[rsp]k_(?:live|test)_[A-Za-z0-9]{10,}",  # Stripe keys
    r"(?i:bearer)\s+[A-Za-z0-9._\-+/=]{12,}",
    r"AKIA[0-9A-Z]{16}",  # AWS access key ids
    r"gh[pousr]_[A-Za-z0-9]{30,}",  # GitHub tokens
    r"xox[abposr]-[A-Za-z0-9-]{10,}",  # Slack tokens
    r"AIza[0-9A-Za-z_\-]{35}",  # Google API keys
    r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",  # JWTs
    r"-----BEGIN[A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END[A-Z ]*PRIVATE KEY-----|\Z)",
)
# Opt-in patterns (`Redactor(patterns=[Redactor.EMAIL])`): personal data rather than
# credentials, so not masked unless asked for.
EMAIL = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
PHONE = r"\+[1-9][0-9 ().\-]{7,18}[0-9]"  # international numbers (+...)

_CONFIG_KEYS = ("fields", "patterns", "defaults", "email", "phone")


class Redactor:
    """Masks secrets by field name and by pattern, and truncates long values.

    `fields`: names or globs (`"ssn"`, `"*_token"`) whose values are masked whole, in
    structures and as `name=value` / `name: value` in text. `patterns`: regexes whose
    matches are masked anywhere (`Redactor.EMAIL` for email addresses). Both add to the
    defaults (credentials: keys, tokens, passwords, private keys, Luhn-valid card
    numbers, passwords in URLs); `defaults=False` keeps only yours.

    Example:
        app = keel.App(redactor=keel.Redactor(fields=["ssn", "*_pin"],
                                              patterns=[keel.Redactor.EMAIL, r"ACME-\\d{6}"]))
        app.redactor.text('login password=hunter2 for ada@example.com')
        # 'login password=[REDACTED] for [REDACTED]'
    """

    EMAIL: ClassVar[str] = EMAIL
    PHONE: ClassVar[str] = PHONE

    def __init__(
        self,
        *,
        fields: Iterable[str] = (),
        patterns: Iterable[str | re.Pattern[str]] = (),
        defaults: bool = True,
        max_chars: int = 4096,
    ) -> None:
        fields = [fields] if isinstance(fields, str) else list(fields)
        patterns = [patterns] if isinstance(patterns, str | re.Pattern) else list(patterns)
        for f in fields:
            if not isinstance(f, str) or not _norm(f, glob=True).strip("*?"):
                raise ConfigError(f"redaction field {f!r} must be a non-empty name or glob")
        names = [*(DEFAULT_FIELDS if defaults else ()), *fields]
        self.fields = _Names(names)
        rules = [_Rule.of(p) for p in (*(DEFAULT_PATTERNS if defaults else ()), *patterns)]
        if defaults:
            rules.append(_CARD)
            rules.append(_URL_PASSWORD)
        self.max_chars = max_chars
        self._kv = _KeyValues(self.fields) if names else None
        # The pre-check: each rule runs only on text holding a literal every match of it
        # contains (found with `in`, far cheaper than any regex); rules with none to
        # find (card numbers, some custom patterns) run on every string.
        self._marked = tuple(r for r in rules if r.marker is not None and not r.ci)
        self._marked_ci = tuple(r for r in rules if r.marker is not None and r.ci)
        self._unmarked = tuple(r for r in rules if r.marker is None)
        self._cards = _CARD in rules

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None, max_chars: int = 4096) -> Redactor:
        """The redactor `[keel.redact]` in keel.toml describes (the defaults without one).

        Example (keel.toml):
            [keel.redact]
            fields = ["ssn", "*_pin"]
            patterns = ['ACME-\\d{6}']
            email = true
        """
        cfg = dict(section or {})
        unknown = sorted(set(cfg) - set(_CONFIG_KEYS))
        if unknown:
            raise ConfigError(
                f"[keel.redact] has unknown key(s) {', '.join(unknown)}; "
                f"known: {', '.join(_CONFIG_KEYS)}"
            )
        for key in ("fields", "patterns"):
            value = cfg.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"[keel.redact] {key} must be a list of strings")
        for key in ("defaults", "email", "phone"):
            if not isinstance(cfg.get(key, False), bool):
                raise ConfigError(f"[keel.redact] {key} must be true or false")
        patterns = list(cfg.get("patterns", []))
        patterns += [EMAIL] if cfg.get("email") else []
        patterns += [PHONE] if cfg.get("phone") else []
        return cls(
            fields=cfg.get("fields", []),
            patterns=patterns,
            defaults=cfg.get("defaults", True),
            max_chars=max_chars,
        )

    # -- the interface every renderer uses ----------------------------------------------

    def value(self, value: Any) -> Any:
        """A JSON-like value with secret fields and secret-looking strings masked (models,
        dataclasses and `keel.Secret`s as their JSON form first)."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            if _is_reference(value):  # a keel.Secret's reference names a source, no value
                return value
            if value.get("type") == "object" and isinstance(value.get("properties"), dict):
                # a JSON Schema (a tool's arguments): its property names describe fields,
                # they hold no values
                return {
                    k: {n: self.value(p) for n, p in v.items()}
                    if k == "properties"
                    else self.value(v)
                    for k, v in value.items()
                }
            return {k: self._field(k, v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        if value is None or isinstance(value, bool | float):
            return value
        if isinstance(value, int):
            return MASK if self._card_int(value) else value
        plain = pydantic_core.to_jsonable_python(value, fallback=str)
        return self.value(plain) if type(plain) is not type(value) else str(plain)

    def text(self, value: Any) -> str:
        """`value` as redacted, truncated text (a span attribute, a message, a table cell)."""
        if value is None or isinstance(value, bool | float):
            return str(value)
        if isinstance(value, int):
            return MASK if self._card_int(value) else str(value)
        if isinstance(value, str):
            return self.truncate(self.scrub(value))
        return self.truncate(json.dumps(self.value(value), default=str, ensure_ascii=False))

    def json_text(self, value: Any) -> str:
        """`value` as redacted JSON that stays valid JSON over the size limit: its longest
        strings are cut (each with the marker), not the text."""
        plain = self.value(value)
        text = json.dumps(plain, default=str, ensure_ascii=False)
        if len(text) <= self.max_chars:
            return text
        # The largest per-string cap that fits; short strings (roles, types, ids) stay whole.
        lo, hi, best = _MIN_CAP, max(_string_lengths(plain), default=0), None
        while lo <= hi:
            cap = (lo + hi) // 2
            cut = json.dumps(_cap(plain, cap, self.truncate), default=str, ensure_ascii=False)
            if len(cut) <= self.max_chars:
                best, lo = cut, cap + 1
            else:
                hi = cap - 1
        return best if best is not None else self.truncate(text)  # too many parts: cut it

    def truncate(self, text: str, limit: int | None = None) -> str:
        limit = self.max_chars if limit is None else limit
        if len(text) <= limit:
            return text
        return f"{text[:limit]}{_MARKER.format(len(text) - limit)}"

    def scrub(self, text: str) -> str:
        """`text` with every secret in it masked (no truncation)."""
        kv = self._kv
        lower = None
        if kv is not None and ("=" in text or ":" in text):
            lower = text.lower()
            if kv.suspect(lower):
                text = kv.sub(text)
        for rule in self._marked:
            if rule.marker in text:  # type: ignore[operator]
                text = rule.sub(text)
        for rule in self._marked_ci:
            if lower is None:
                lower = text.lower()
            if rule.marker in lower:  # type: ignore[operator]
                text = rule.sub(text)
        for rule in self._unmarked:
            if rule.worth(text):
                text = rule.sub(text)
        return text

    # -- records, for renderings (CLI, console, API) --------------------------------------

    def run(self, info: RunInfo) -> RunInfo:
        """`info` with its input, result, state and error redacted."""
        return info.model_copy(
            update={
                "input": self.value(info.input),
                "result": self.value(info.result),
                "state": self.value(info.state),
                "error": self.error(info.error),
            }
        )

    def step(self, rec: StepRecord) -> StepRecord:
        """A journal entry with its input, output, state change, error and failed
        attempts redacted."""
        return rec.model_copy(
            update={
                "input": self.value(rec.input),
                "output": self.value(rec.output),
                "state_delta": self.value(rec.state_delta),
                "error": self.error(rec.error),
                "attempt_log": self.value(rec.attempt_log),
            }
        )

    def error(self, err: StructuredError | None) -> StructuredError | None:
        """A structured error with its message, data and causes redacted."""
        if err is None:
            return None
        return err.model_copy(
            update={
                "message": self.scrub(err.message),
                "data": self.value(err.data),
                "cause": self.error(err.cause),
            }
        )

    def escalation(self, esc: Escalation) -> Escalation:
        """An escalation with its packet's payloads (input, output, journal, state, error,
        messages) and its resolution redacted."""
        p = esc.packet
        packet = p.model_copy(
            update={
                "input": self.value(p.input),
                "output": self.value(p.output),
                "journal": self.value(p.journal),
                "state": self.value(p.state),
                "error": self.error(p.error),
                "messages": [self.scrub(m) for m in p.messages],
                "reason": self.scrub(p.reason),
            }
        )
        return esc.model_copy(update={"packet": packet, "resolution": self.value(esc.resolution)})

    def review(self, req: ReviewRequest) -> ReviewRequest:
        """An approval or review request with its request (arguments, context, input,
        output) and its decision redacted."""
        return req.model_copy(
            update={"request": self.value(req.request), "decision": self.value(req.decision)}
        )

    def restore(self, edited: Any, original: Any) -> Any:
        """`edited` with every `[REDACTED]` put back to the value at the same place in
        `original`: a reviewer who saw masked arguments and changed others keeps the
        secrets they could not see (and never learns them)."""
        if edited == MASK:
            return original
        if isinstance(edited, dict) and isinstance(original, dict):
            return {
                k: self.restore(v, original[k]) if k in original else v for k, v in edited.items()
            }
        if isinstance(edited, list) and isinstance(original, list) and len(edited) == len(original):
            return [self.restore(a, b) for a, b in zip(edited, original, strict=True)]
        return edited

    def sensitive(self, name: str) -> bool:
        """Whether a field called `name` is masked whole."""
        return self.fields.match(name)

    # -- internals ------------------------------------------------------------------------

    def _field(self, key: Any, v: Any) -> Any:
        if v is None or v == "" or _is_reference(v) or not self.fields.match(str(key)):
            return self.value(v)
        return MASK

    def _card_int(self, value: int) -> bool:
        return (
            self._cards
            and 10**12 <= value < 10**19
            and str(value)[0] in "23456"
            and _luhn(str(value))
        )


# -- rules --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    """A pattern whose matches are masked; `marker` is a literal every match contains
    (None: none to find), lower-cased when `ci`."""

    regex: re.Pattern[str]
    marker: str | None
    ci: bool = False
    replace: Callable[[re.Match[str]], str] | None = None
    worth: Callable[[str], bool] = bool  # a cheap test for rules without markers

    @classmethod
    def of(cls, pattern: str | re.Pattern[str]) -> _Rule:
        try:
            regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        except re.error as exc:
            raise ConfigError(
                f"redaction pattern {pattern!r} is not a valid regex: {exc}"
            ) from None
        literal, ci = _required_literal(regex)
        return cls(regex, literal, ci)

    def sub(self, text: str) -> str:
        return self.regex.sub(self.replace or MASK, text)


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(m: re.Match[str]) -> str:
    digits = re.sub(r"[ \-]", "", m.group())
    return MASK if 13 <= len(digits) <= 19 and _luhn(digits) else m.group()


# Every digit as b"0": a card number, however it is grouped, has 4 digits in a row
# (bytes.translate and `in` are C loops: ~1.5 µs per KB, a fifth of the regex).
_DIGITS = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))
# Card numbers (13-19 digits, optionally grouped by spaces or dashes, starting 2-6 as
# Visa, Mastercard, Amex, Discover, JCB, UnionPay do) that pass the Luhn check. The first
# item is the charset so the regex engine skips ahead to candidate digits.
_CARD = _Rule(
    re.compile(r"[2-6](?<![0-9][2-6])(?:[ \-]?[0-9]){12,18}(?![0-9])"),
    None,
    replace=_card,
    worth=lambda t: len(t) >= 13 and b"0000" in t.encode(errors="surrogatepass").translate(_DIGITS),
)
# The password in `scheme://user:password@host`.
_URL_PASSWORD = _Rule(
    re.compile(r"(?<=://)([^\s/:@]+):[^\s/@]+(?=@)"),
    "://",
    replace=lambda m: f"{m.group(1)}:{MASK}",
)


def _required_literal(regex: re.Pattern[str]) -> tuple[str | None, bool]:
    """The longest literal every match of `regex` contains, and whether it is matched
    case-insensitively (then given lower-cased); None when there is none to find."""
    try:
        from re import _parser  # type: ignore[attr-defined]

        tree = _parser.parse(regex.pattern, regex.flags)
    except Exception:  # a bytes pattern, or a parser this Python does not have
        return None, False
    best: list[tuple[str, bool]] = []

    def walk(items: Any, ci: bool) -> None:
        run: list[str] = []
        for op, av in items:
            name = str(op)
            if name == "LITERAL":
                run.append(chr(av))
                continue
            if run:
                best.append(("".join(run), ci))
                run = []
            if name == "SUBPATTERN":
                _group, add, remove, sub = av
                walk(sub, (ci or bool(add & re.IGNORECASE)) and not remove & re.IGNORECASE)
            elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT") and av[0] >= 1:
                walk(av[2], ci)
        if run:
            best.append(("".join(run), ci))

    walk(tree, bool(regex.flags & re.IGNORECASE))
    if not best:
        return None, False
    literal, ci = max(best, key=lambda b: len(b[0]))
    return (literal.lower() if ci else literal), ci


# -- names ----------------------------------------------------------------------------------

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NON_NAME = re.compile(r"[^a-z0-9]+")
_NON_GLOB = re.compile(r"[^a-z0-9*?\[\]!]+")


def _norm(name: str, glob: bool = False) -> str:
    """`X-Api-Key`, `apiKey`, `API_KEY`, `api.key` -> `x_api_key` / `api_key`."""
    lowered = _CAMEL.sub("_", name).lower()
    return (_NON_GLOB if glob else _NON_NAME).sub("_", lowered).strip("_")


class _Names:
    """Field names and globs, matched after normalising, with a memo per name seen."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = tuple(dict.fromkeys(names))
        norm = [_norm(n, glob=True) for n in self.names]
        self.exact = frozenset(n for n in norm if not any(c in n for c in "*?["))
        globs = [n for n in norm if n not in self.exact]
        self.glob = re.compile("|".join(fnmatch.translate(g) for g in globs)) if globs else None
        self._memo: dict[str, bool] = {}

    def match(self, name: str) -> bool:
        hit = self._memo.get(name)
        if hit is None:
            # `http.request.header.authorization`: its last part is the name too
            hit = any(self._one(_norm(n)) for n in {name, name.rsplit(".", 1)[-1]})
            if len(self._memo) > 4096:
                self._memo.clear()
            self._memo[name] = hit
        return hit

    def _one(self, n: str) -> bool:
        return n in self.exact or (self.glob is not None and self.glob.match(n) is not None)

    def fragments(self) -> tuple[str, ...]:
        """A literal each matching name contains however it is spelled (lower-cased):
        the longest alphanumeric piece of each name or glob."""
        out = set()
        for n in self.names:
            pieces = [p for p in re.split(r"[^a-z0-9]+", _norm(n, glob=True)) if p]
            if pieces:
                out.add(max(pieces, key=len))
        # one that contains another is found whenever that one is
        return tuple(sorted(f for f in out if not any(g != f and g in f for g in out)))


# `name=value`, `name: value`, `"name": "value"`, `name='value'` and HTTP headers
# (`Authorization: Basic ...`: the scheme stays, the credential goes).
_KV = re.compile(
    r"""(?<![\w$@.\-])(?P<key>[A-Za-z_$@][\w.\-]{0,63})\\?["']?[ \t]*(?:=>|:=|[:=])[ \t]*
    (?P<scheme>(?i:basic|bearer|digest|token|negotiate|ntlm|apikey)[ \t]+)?
    (?:\\"(?P<edq>(?:[^"\\]|\\[^"])*)\\"
      |"(?P<dq>(?:[^"\\\n]|\\.)*)"
      |'(?P<sq>[^'\n]*)'
      |(?P<bare>[^\s"'<>,;&)\]}]+))""",
    re.VERBOSE,
)
_NOT_SECRET = frozenset(("null", "none", "true", "false", "undefined", "nil", MASK.lower()))


class _KeyValues:
    def __init__(self, names: _Names) -> None:
        self.names = names
        self.fragments = names.fragments()

    def suspect(self, lower: str) -> bool:
        for f in self.fragments:  # noqa: SIM110 - a loop, not any(): no generator per string
            if f in lower:
                return True
        return False

    def sub(self, text: str) -> str:
        return _KV.sub(self._replace, text)

    def _replace(self, m: re.Match[str]) -> str:
        if not self.names.match(m.group("key")):
            return m.group()
        for group in ("edq", "dq", "sq", "bare"):
            value = m.group(group)
            if value is not None:
                break
        if not value or value.lower() in _NOT_SECRET or value.startswith(MASK):
            return m.group()
        start, end = m.span(group)
        base = m.start()
        whole = m.group()
        return whole[: start - base] + MASK + whole[end - base :]


def _is_reference(value: Any) -> bool:
    """`{"$secret": "env:NAME"}`: a `keel.Secret` as Keel stores it (a name, never a value)."""
    return (
        isinstance(value, dict)
        and len(value) == 1
        and isinstance(value.get("$secret"), str)
        and ":" in value["$secret"]
    )


# -- truncation ----------------------------------------------------------------------------

_MARKER = "…[truncated {} chars; full value in the journal]"
_MIN_CAP = 64


def _string_lengths(value: Any) -> Iterable[int]:
    if isinstance(value, str):
        yield len(value)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _string_lengths(v)
    elif isinstance(value, list):
        for v in value:
            yield from _string_lengths(v)


def _cap(value: Any, cap: int, cut: Any) -> Any:
    """`value` with every string longer than `cap` cut to `cap` (and marked)."""
    if isinstance(value, str):
        return cut(value, cap)
    if isinstance(value, dict):
        return {k: _cap(v, cap, cut) for k, v in value.items()}
    if isinstance(value, list):
        return [_cap(v, cap, cut) for v in value]
    return value
