"""Out-of-distribution routing: inputs far from the reference set go to a person first.

Score = mean cosine distance from the input's embedding to its k nearest reference
embeddings. Threshold = the chosen percentile of the references' own scores (each
against the other references). An input scoring above the threshold is novel.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from keel.embed import Embedder, default


def _distance(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a)) or 1.0
    nb = math.sqrt(sum(y * y for y in b)) or 1.0
    return 1.0 - dot / (na * nb)


class NoveltyDetector:
    """Flags inputs unlike the references.

    Example:
        detector = keel.hitl.NoveltyDetector(k=5, percentile=95)
        await detector.fit(["refund for invoice 12", "password reset", ...])
        @app.workflow(novelty=detector)
        async def triage(ctx, ticket: Ticket) -> Outcome: ...
    """

    def __init__(
        self,
        embedder: Embedder | None = None,
        *,
        k: int = 5,
        percentile: float = 95.0,
        queue: str = "novelty",
        text: Callable[[dict[str, Any]], str] | None = None,
    ) -> None:
        if k < 1 or not 0 < percentile <= 100:
            raise ValueError("NoveltyDetector needs k >= 1 and 0 < percentile <= 100")
        self.embedder = embedder or default()
        self.k = k
        self.percentile = percentile
        self.queue = queue
        self.text = text or (lambda inputs: json.dumps(inputs, sort_keys=True, default=str))
        self.references: list[list[float]] = []
        self.threshold: float | None = None

    async def fit(self, references: list[str]) -> NoveltyDetector:
        if len(references) < 2:
            raise ValueError("fit() needs at least 2 reference inputs")
        self.references = await self.embedder.embed(list(references))
        own = [self._score(v, skip=i) for i, v in enumerate(self.references)]
        own.sort()
        rank = max(0, min(len(own) - 1, math.ceil(self.percentile / 100 * len(own)) - 1))
        self.threshold = own[rank]
        return self

    def _score(self, vector: list[float], skip: int | None = None) -> float:
        dists = sorted(_distance(vector, r) for i, r in enumerate(self.references) if i != skip)
        near = dists[: self.k]
        return sum(near) / len(near)

    async def score(self, text: str) -> tuple[float, bool]:
        """(score, novel) for one input text."""
        if self.threshold is None:
            raise ValueError("fit() the detector on reference inputs first")
        [vector] = await self.embedder.embed([text])
        s = self._score(vector)
        return s, s > self.threshold

    def save(self, path: str | Path) -> None:
        Path(path).write_text(
            json.dumps(
                {
                    "k": self.k,
                    "percentile": self.percentile,
                    "threshold": self.threshold,
                    "references": self.references,
                }
            )
        )

    @classmethod
    def load(cls, path: str | Path, embedder: Embedder | None = None) -> NoveltyDetector:
        data = json.loads(Path(path).read_text())
        det = cls(embedder, k=data["k"], percentile=data["percentile"])
        det.threshold, det.references = data["threshold"], data["references"]
        return det
