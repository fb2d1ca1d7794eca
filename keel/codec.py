"""Payload codecs: what every journaled payload passes through on its way into the store.

An App with a codec (`keel.App(codec=...)`, or `KEEL_ENCRYPTION_KEY` set) stores run
inputs, results and state, step inputs and outputs, signals, approvals, escalations,
out-of-line outputs, cached model replies, trace attributes and audit details encoded.
Ids, statuses, times and names stay clear, so queries and indexes work unchanged
(docs/storage.md, "Encryption at rest").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from keel.errors import ConfigError, PayloadUnreadable

ENV_KEY = "KEEL_ENCRYPTION_KEY"
ENV_KEY_FILE = "KEEL_ENCRYPTION_KEY_FILE"
_NONCE = 12  # bytes: AES-GCM's 96-bit nonce, random per value
_KEY_BYTES = 32  # AES-256


@runtime_checkable
class PayloadCodec(Protocol):
    """Turns a payload's bytes into the bytes stored, and back.

    `key_id` is stored beside every value the codec encodes and handed back to
    `decode`, so a codec keeps reading what its older keys wrote (key rotation).
    `context` names where the value lives (column and row): an encrypting codec binds
    it as associated data, so a stored value cannot be moved to another column or row.

    Example:
        class Zlib:  # compression: no key, ignores the context
            key_id = "zlib"
            def encode(self, data: bytes, context: bytes) -> bytes:
                return zlib.compress(data)
            def decode(self, data: bytes, key_id: str, context: bytes) -> bytes:
                return zlib.decompress(data)
    """

    @property
    def key_id(self) -> str: ...

    def encode(self, data: bytes, context: bytes) -> bytes: ...

    def decode(self, data: bytes, key_id: str, context: bytes) -> bytes: ...


def key_id(key: bytes) -> str:
    """The id an AES key is stored under: a fingerprint, so no one has to name keys and
    the same key gets the same id everywhere (telling nothing about the key itself)."""
    return hashlib.sha256(b"keel aes-gcm key id\x00" + key).hexdigest()[:8]


def new_key() -> str:
    """A fresh key for `KEEL_ENCRYPTION_KEY`: base64 of 32 random bytes."""
    return base64.b64encode(os.urandom(_KEY_BYTES)).decode()


class AESGCMCodec:
    """AES-256-GCM with key rotation: encodes with the first key, decodes with any.

    Each value gets a random 96-bit nonce and the id of the key that sealed it; its
    context (column and row) is the associated data. Keys come from the caller, or
    from `KEEL_ENCRYPTION_KEY` (`AESGCMCodec.from_env()`), never from the store.

    Example:
        codec = AESGCMCodec([new, old])          # raw 32-byte keys, the first current
        app = keel.App(codec=codec)              # or just set KEEL_ENCRYPTION_KEY="NEW,OLD"
    """

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ConfigError("AESGCMCodec needs at least one key (32 bytes)")
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # not on `import keel`

        self._aes: dict[str, Any] = {}
        for n, key in enumerate(keys, 1):
            if len(key) != _KEY_BYTES:
                raise ConfigError(
                    f"encryption key {n} is {len(key)} bytes; AES-256-GCM needs {_KEY_BYTES}"
                    " (make one with: keel store new-key)"
                )
            self._aes.setdefault(key_id(key), AESGCM(key))
        self._current = next(iter(self._aes))
        self._sealer = self._aes[self._current]

    @property
    def key_id(self) -> str:
        return self._current

    @property
    def key_ids(self) -> list[str]:
        """Every configured key's id, the current one first."""
        return list(self._aes)

    @classmethod
    def from_text(cls, text: str, source: str = ENV_KEY) -> AESGCMCodec:
        """Keys from a comma-separated list of base64 keys, the first current."""
        items = [part.strip() for part in text.split(",")]
        if not any(items):
            raise ConfigError(
                f"{source} is set but empty: give base64 keys (make one with: keel store"
                f" new-key), or unset {source} to store payloads in clear"
            )
        keys = []
        for n, item in enumerate(items, 1):
            if not item:
                raise ConfigError(f"{source}: key {n} of {len(items)} is empty (a stray comma?)")
            keys.append(_b64(item, n, source))
        try:
            return cls(keys)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc.message}") from None

    @classmethod
    def from_env(cls, environ: Any = None) -> AESGCMCodec | None:
        """The codec `KEEL_ENCRYPTION_KEY` (or the file `KEEL_ENCRYPTION_KEY_FILE` names)
        asks for; None when neither is set."""
        env = os.environ if environ is None else environ
        text, path = env.get(ENV_KEY), env.get(ENV_KEY_FILE)
        if text is not None and path is not None:
            raise ConfigError(f"both {ENV_KEY} and {ENV_KEY_FILE} are set: keep one")
        if path is not None:
            return cls.from_file(path, ENV_KEY_FILE)
        return None if text is None else cls.from_text(text)

    @classmethod
    def from_file(cls, path: str, source: str = ENV_KEY_FILE) -> AESGCMCodec:
        """Keys from a file holding what `KEEL_ENCRYPTION_KEY` would (a mounted secret)."""
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise ConfigError(f"{source}: cannot read key file {path!r} ({reason})") from None
        return cls.from_text(text, f"{source} ({path})")

    def encode(self, data: bytes, context: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        sealed: bytes = self._sealer.encrypt(nonce, data, context)
        return nonce + sealed

    def decode(self, data: bytes, key_id: str, context: bytes) -> bytes:
        aes = self._aes.get(key_id)
        if aes is None:
            raise PayloadUnreadable(
                f"it was encrypted with key {key_id}, which is not configured (configured:"
                f" {', '.join(self._aes)}); add that key to {ENV_KEY} after the current one",
                key_id=key_id,
            )
        from cryptography.exceptions import InvalidTag

        try:
            plain: bytes = aes.decrypt(data[:_NONCE], data[_NONCE:], context)
        except InvalidTag:
            raise PayloadUnreadable(
                f"it does not authenticate under key {key_id}: the stored value was changed"
                " or moved from another row or column",
                key_id=key_id,
            ) from None
        return plain


def _b64(item: str, n: int, source: str) -> bytes:
    try:
        alt = b"-_" if "-" in item or "_" in item else None  # the URL-safe alphabet too
        return base64.b64decode(item.encode("ascii"), altchars=alt, validate=True)
    except (binascii.Error, ValueError):
        # Never echo the value: it is (part of) a secret.
        raise ConfigError(
            f"{source}: key {n} is not base64 (expected base64 of {_KEY_BYTES} random bytes;"
            " make one with: keel store new-key)"
        ) from None
