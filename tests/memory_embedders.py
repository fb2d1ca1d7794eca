"""A deterministic `keel.embed.Embedder` for tests of plumbing that claims nothing about
retrieval quality (ids, errors, embedder names): words hashed into a small vector."""

from __future__ import annotations

import hashlib
import math
import re


class HashedWords:
    """Each word adds 1 to a dimension picked by its hash; normalised.

    Example:
        app = keel.App(url, embedder=HashedWords())
    """

    def __init__(self, name: str = "test:hashed-words", dim: int = 64) -> None:
        self.name = name
        self.dim = dim

    async def embed(self, texts: list[str]) -> list[list[float]]:
        out = []
        for text in texts:
            vec = [0.0] * self.dim
            for word in re.findall(r"\w+", text.lower()):
                vec[int(hashlib.sha256(word.encode()).hexdigest(), 16) % self.dim] += 1.0
            norm = math.sqrt(sum(v * v for v in vec)) or 1.0
            out.append([v / norm for v in vec])
        return out
