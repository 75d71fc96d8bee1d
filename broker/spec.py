"""The experiment spec: which objective to run on which search space, signed.

Stored in the experiment document as ``spec`` (the exact JSON text) and
``spec_signature`` (its HMAC under the shared secret). Workers call :func:`open_spec`
before anything else; an unsigned, planted or altered spec raises
:class:`~broker.errors.SignatureError` and nothing in it is acted upon.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hyperopt.pyll import Apply

from broker import objective, signing, space
from broker.errors import ObjectiveError
from broker.settings import Secret


def build(fn: Callable[..., Any], expr: Apply, workspace: Path, call_index: int, *,
          limits: dict[str, float] | None = None) -> dict[str, Any]:
    """The spec of a tuning run of ``fn`` over the (validated) space ``expr``; ``limits``
    are the trials' time limits (``timeout_s``, ``soft_timeout_s``)."""
    encoded = space.encode(expr)
    ref = objective.reference(fn, workspace, call_index)
    if ref["kind"] == "module" and not encoded["portable"]:
        raise ObjectiveError(
            "the search space holds Python objects that cannot travel as data, and there "
            "is no tuning script in the workspace for workers to rebuild it from: run the "
            "tuning from a script, or use plain values (numbers, strings, lists, dicts)")
    return {
        "objective": ref,
        "space": encoded,
        "space_fingerprint": space.fingerprint(encoded),
        "limits": {k: v for k, v in (limits or {}).items() if v is not None},
    }


def seal(spec: dict[str, Any], secret: Secret) -> tuple[str, str]:
    """``(text, signature)`` to store with the experiment."""
    text = signing.canonical_json(spec)
    return text, signing.sign(secret, text)


def open_spec(text: str | None, signature: str | None, secret: Secret) -> dict[str, Any]:
    """The spec, after verifying its signature."""
    signing.verify(secret, text or "", signature)
    return json.loads(text or "")
