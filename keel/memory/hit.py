"""`MemoryHit`: what a long-term memory search returns, and its journaled form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class MemoryHit:
    """One memory found by `search`: its id, text, relevance `score` in [0, 1] (the same
    scale for every query: 0.5 means as likely relevant as not) and metadata.

    Example:
        for hit in await app.memory.search("what does Ada drink?", min_relevance=0.5):
            print(f"{hit.score:.2f} {hit.text}")
    """

    id: str
    text: str
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)
    digest: str = ""  # sha256 of the text: what a journal records the hit was

    def as_dict(self) -> dict[str, Any]:
        """The JSON form a workflow's journal keeps."""
        return {
            "id": self.id,
            "text": self.text,
            "score": self.score,
            "metadata": self.metadata,
            "digest": self.digest,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemoryHit:
        """A hit back from its journaled form."""
        return cls(
            id=data["id"],
            text=data["text"],
            score=float(data["score"]),
            metadata=dict(data.get("metadata") or {}),
            digest=data.get("digest", ""),
        )
