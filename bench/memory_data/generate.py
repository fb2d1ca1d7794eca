"""The seeded generator: personas, dated sessions, turns, and questions with evidence.

`build(split)` is deterministic for a split (its seed is fixed below): the same
turns, ids and questions on every machine and Python version (only `random.Random`
seeded with ints is used, never `hash()`).
"""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from dataclasses import asdict, dataclass, field
from random import Random
from typing import Any

from . import facts, filler
from .facts import SLOTS, Slot, Value

SEEDS = {"dev": 1601, "test": 1602}
PERSONAS = {"dev": 36, "test": 40}
QUICK_PERSONAS = 10

# Words with no topical content: dropped from questions by the full-text baseline
# and ignored when checking that a paraphrase shares no content word with its evidence.
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for
from further had has have having he her here hers herself him himself his how i if in
into is it its itself just me more most my myself no nor not now of off on once only or
other our ours ourselves out over own same she should so some such than that the their
theirs them themselves then there these they this those through to too under until up
very was we were what when where which while who whom why will with would you your yours
yourself yourselves ve ll re s t d m tell told remind let lets get got us since while
these days currently
""".split())  # noqa: SIM905 (a list this long reads better as words)

@dataclass
class Turn:
    """One utterance: `id` is what questions cite as evidence."""

    id: str
    persona: str
    session: int
    index: int
    speaker: str
    date: str
    text: str


@dataclass
class Question:
    """A question about one persona, with the turn ids that hold its answer."""

    id: str
    persona: str
    kind: str
    text: str
    answer: str
    evidence: list[str]
    slot: str = ""  # what the question is about (a persona without it cannot answer)


@dataclass
class Dataset:
    """One split: every turn of every persona, and the questions."""

    split: str
    seed: int
    turns: list[Turn] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)

    def personas(self) -> list[str]:
        return sorted({t.persona for t in self.turns})

    def to_json(self) -> dict[str, Any]:
        return {"split": self.split, "seed": self.seed,
                "turns": [asdict(t) for t in self.turns],
                "questions": [asdict(q) for q in self.questions]}


def content_terms(text: str) -> list[str]:
    """Lower-case words of `text` minus stopwords: what a keyword query is made of."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return [w for w in dict.fromkeys(words) if w not in STOPWORDS]


class _Overlap:
    """Does a question share a content word with a text, as FTS5 porter sees it?"""

    def __init__(self) -> None:
        self.db = sqlite3.connect(":memory:")
        self.db.execute("CREATE VIRTUAL TABLE t USING fts5(body, tokenize='porter unicode61')")

    def __call__(self, question: str, text: str) -> bool:
        terms = content_terms(question)
        if not terms:
            return False
        self.db.execute("DELETE FROM t")
        self.db.execute("INSERT INTO t(body) VALUES (?)", (text,))
        query = " OR ".join(f'"{t}"' for t in terms)
        return self.db.execute("SELECT 1 FROM t WHERE t MATCH ?", (query,)).fetchone() is not None


@dataclass
class _Event:
    session: int
    slot: str
    text: str
    own: bool  # the persona's own fact (evidence) rather than a distractor
    value: Value
    ack: str


def _fmt(template: str, value: Value) -> str:
    return template.format(**value)


def _lower_first(text: str) -> str:
    first = text.split()[0]
    proper = first.startswith(("I ", "I'", "Dr.")) or first == "I" or (first[:1].isupper() and (
        first.strip(",.:'s") in facts.FIRST + facts.PET_NAMES + facts.SURNAMES))
    return text if proper else text[0].lower() + text[1:]


def _persona(
    rng: Random, split: str, n: int, overlap: _Overlap
) -> tuple[list[Turn], list[Question]]:
    pid = f"{split}{n:03d}"
    name = rng.choice(facts.FIRST)
    sessions = rng.randint(14, 24)
    start = dt.date(2024, 1, 1) + dt.timedelta(days=rng.randint(0, 300))
    dates, day = [], start
    for _ in range(sessions):
        dates.append(day)
        day += dt.timedelta(days=rng.randint(2, 12))

    events: list[_Event] = []
    history: dict[str, list[_Event]] = {}  # slot -> the persona's own statements, in order
    chosen = rng.sample(SLOTS, rng.randint(7, len(SLOTS)))
    for slot in chosen:
        value = slot.draw(rng)
        first = rng.randint(0, max(0, int(sessions * 0.6) - 1))
        own = [_Event(first, slot.name, _fmt(rng.choice(slot.statements), value), True,
                      value, _fmt(rng.choice(slot.acks), value))]
        later = first
        # Facts change: an update supersedes the old value (temporal questions);
        # a second pet is a second fact of the same kind (multi-session questions).
        changes = 0
        if slot.updates and slot.redraw and rng.random() < 0.7:
            changes = 1 + (rng.random() < 0.3)
        elif slot.name == "pet" and rng.random() < 0.5:
            changes = 1
        for _ in range(changes):
            if later >= sessions - 1:
                break
            later = rng.randint(later + 1, min(sessions - 1, later + 6))
            if slot.updates and slot.redraw:
                value = slot.redraw(rng, value)
                template = rng.choice(slot.updates)
            else:
                value = slot.draw(rng)
                template = rng.choice(slot.statements)
            own.append(_Event(later, slot.name, _fmt(template, value), True, value,
                              _fmt(rng.choice(slot.acks), value)))
        history[slot.name] = own
        events += own
    # Distractors: the same topics about other people, for chosen and unchosen slots.
    for slot in SLOTS:
        for _ in range(rng.randint(1, 2) if slot in chosen else rng.randint(0, 1)):
            other = facts.other_value(rng)
            events.append(_Event(rng.randrange(sessions), slot.name,
                                 _fmt(rng.choice(slot.others), other), False, other,
                                 rng.choice(["Ha, sounds like quite a story!",
                                             "Oh nice, tell them I said congratulations.",
                                             "That's interesting, thanks for sharing."])))

    # On-topic chatter with no fact in it, about the persona's topics and others'.
    for s in range(sessions):
        for slot in rng.sample(SLOTS, rng.randint(1, 3)):
            other = facts.other_value(rng)
            events.append(_Event(s, slot.name, _fmt(rng.choice(facts.CHATTER[slot.name]), other),
                                 False, other, rng.choice(filler.REPLIES)))

    turns: list[Turn] = []
    where: dict[int, str] = {}  # id(event) -> the user turn stating it
    for s in range(sessions):
        items: list[_Event | None] = [e for e in events if e.session == s]
        items += [None] * rng.randint(3, 6)
        rng.shuffle(items)
        for item in items:
            if item is None:
                user, reply = filler.exchange(rng)
            elif item.own and rng.random() < 0.35:
                # Said in passing, before an unrelated request: the fact is diluted.
                request, reply = filler.exchange(rng)
                user = f"By the way, {_lower_first(item.text)} Anyway: {request}"
            else:
                user, reply = item.text, item.ack
            for speaker, text in ((name, user), ("assistant", reply)):
                tid = f"{pid}-s{s:02d}-t{len([t for t in turns if t.session == s]):02d}"
                turns.append(Turn(tid, pid, s, len(turns), speaker, dates[s].isoformat(), text))
            if item is not None:
                where[id(item)] = turns[-2].id
    by_id = {t.id: t for t in turns}
    questions = _questions(rng, pid, chosen, history, where, by_id, overlap)
    return turns, questions


def _questions(rng: Random, pid: str, chosen: list[Slot], history: dict[str, list[_Event]],
               where: dict[int, str], by_id: dict[str, Turn],
               overlap: _Overlap) -> list[Question]:
    out: list[Question] = []

    slot = chosen[0]

    def ask(kind: str, text: str, answer: str, evidence: list[str]) -> None:
        out.append(Question(f"{pid}-q{len(out):02d}", pid, kind, text, answer, evidence,
                            slot.name))

    for slot in chosen:
        own = history[slot.name]
        latest = own[-1]
        ev_latest = where[id(latest)]
        changed = len(own) > 1
        if changed and slot.questions.get("temporal"):
            q, a = rng.choice(slot.questions["temporal"])
            ask("temporal", _fmt(q, latest.value), _fmt(a, latest.value), [ev_latest])
        if changed and slot.multi:
            q, a = rng.choice(slot.multi)
            ask("multi", q, ", ".join(_fmt(a, e.value) for e in own),
                [where[id(e)] for e in own])
        if not changed:
            # A paraphrase must share no content word with the evidence, as FTS5 sees it.
            options = [(q, a) for q, a in slot.questions.get("paraphrase", [])
                       if not overlap(_fmt(q, latest.value), by_id[ev_latest].text)]
            if options:
                q, a = rng.choice(options)
                ask("paraphrase", _fmt(q, latest.value), _fmt(a, latest.value), [ev_latest])
        if slot.questions.get("keyword"):
            q, a = rng.choice(slot.questions["keyword"])
            ask("keyword", _fmt(q, latest.value), _fmt(a, latest.value), [ev_latest])
    return out


def build(split: str, *, quick: bool = False) -> Dataset:
    """The `dev` or `test` split (`quick`: its first few personas only).

    Example: `ds = build("test"); len(ds.questions)`
    """
    if split not in SEEDS:
        raise ValueError(f"unknown split {split!r}: use one of {sorted(SEEDS)}")
    seed = SEEDS[split]
    data = Dataset(split, seed)
    overlap = _Overlap()
    for n in range(QUICK_PERSONAS if quick else PERSONAS[split]):
        turns, questions = _persona(Random(seed * 10_000 + n), split, n, overlap)
        data.turns += turns
        data.questions += questions
    return data
