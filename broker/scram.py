"""The server side of SCRAM-SHA-256 (RFC 5802, RFC 7677), as MongoDB speaks it.

Used by :mod:`broker.mongo_server` to put a password on the local MongoDB wire server,
which has no authentication of its own. One :class:`Conversation` per connection;
credentials are derived once from the password and the password is not kept.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

ITERATIONS = 15000
"""PBKDF2 iterations (MongoDB's default for SCRAM-SHA-256)."""


class ScramError(Exception):
    """The client's messages are malformed or its proof is wrong."""


@dataclass(frozen=True)
class Credentials:
    user: str
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    @classmethod
    def derive(cls, user: str, password: str, *, salt: bytes | None = None,
               iterations: int = ITERATIONS) -> Credentials:
        salt = salt or secrets.token_bytes(16)
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
        client_key = _hmac(salted, b"Client Key")
        return cls(user, salt, iterations, hashlib.sha256(client_key).digest(),
                   _hmac(salted, b"Server Key"))


class Conversation:
    """``start(client_first) -> server_first``; ``finish(client_final) -> server_final``."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self.authenticated = False

    def start(self, client_first: bytes) -> bytes:
        text = client_first.decode()
        gs2, _, bare = text.partition(",,")
        if gs2 not in ("n", "y") or not bare:
            raise ScramError("malformed client-first message (channel binding unsupported)")
        fields = _fields(bare)
        user = fields.get("n", "").replace("=2C", ",").replace("=3D", "=")
        if not hmac.compare_digest(user.encode(), self.credentials.user.encode()):
            raise ScramError("authentication failed")
        client_nonce = fields.get("r", "")
        if not client_nonce:
            raise ScramError("malformed client-first message (no nonce)")
        self._client_first_bare = bare
        self._nonce = client_nonce + base64.b64encode(secrets.token_bytes(24)).decode()
        salt = base64.b64encode(self.credentials.salt).decode()
        self._server_first = f"r={self._nonce},s={salt},i={self.credentials.iterations}"
        return self._server_first.encode()

    def finish(self, client_final: bytes) -> bytes:
        text = client_final.decode()
        without_proof, _, proof_field = text.rpartition(",p=")
        fields = _fields(without_proof)
        if not self._server_first or fields.get("r") != self._nonce or not proof_field:
            raise ScramError("malformed client-final message")
        auth_message = ",".join([self._client_first_bare, self._server_first, without_proof])
        signature = _hmac(self.credentials.stored_key, auth_message.encode())
        proof = base64.b64decode(proof_field)
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=False))
        if len(proof) != len(signature) or not hmac.compare_digest(
                hashlib.sha256(client_key).digest(), self.credentials.stored_key):
            raise ScramError("authentication failed")
        self.authenticated = True
        server_signature = _hmac(self.credentials.server_key, auth_message.encode())
        return b"v=" + base64.b64encode(server_signature)


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _fields(text: str) -> dict[str, str]:
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if sep:
            out[key] = value
    return out
