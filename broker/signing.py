"""HMAC signatures over experiment specs, keyed by the shared secret.

The tuner signs the spec it stores in MongoDB (which objective to run, which space);
workers verify before acting on it. Anyone who can write to MongoDB but does not hold
the secret cannot make a worker run anything. The spec is stored as the exact JSON
text that was signed, so no database type conversion can break verification.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from broker.errors import SignatureError
from broker.settings import Secret


def canonical_json(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def sign(secret: Secret, text: str) -> str:
    return hmac.new(secret.reveal().encode(), text.encode(), hashlib.sha256).hexdigest()


def verify(secret: Secret, text: str, signature: str | None) -> None:
    """:class:`SignatureError` unless ``signature`` is the HMAC of ``text``."""
    if not isinstance(text, str) or not isinstance(signature, str):
        raise SignatureError("experiment spec is not signed")
    if not hmac.compare_digest(sign(secret, text), signature):
        raise SignatureError("experiment spec signature does not match the shared secret: "
                             "it was written by someone without the secret, or altered")
