"""Turn whatever the objective returned into a trial ``result`` document.

Hyperopt accepts a number (the loss) or a dict with ``status`` and, when the status is
``ok``, a ``loss``. Anything else, a non-finite loss, a value that is not JSON, or an
oversized result becomes a failed trial whose ``failure.message`` says exactly what was
wrong, so a bad return is never counted as a good point.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from hyperopt import STATUS_FAIL, STATUS_OK, STATUS_STRINGS

from broker import defaults
from broker.trial_doc import failure_result


class InvalidResult(ValueError):
    pass


def normalize(value: Any, *, max_bytes: int = defaults.MAX_RESULT_BYTES) -> dict[str, Any]:
    """The result document for ``value``, or a failure result explaining why not."""
    try:
        result = _as_result(value)
        encoded = json.dumps(result, allow_nan=False)
    except InvalidResult as exc:
        return failure_result("invalid_result", str(exc))
    if len(encoded) > max_bytes:
        return failure_result("invalid_result",
                              f"result is {len(encoded)} bytes of JSON; the limit is {max_bytes}")
    return result


def _as_result(value: Any) -> dict[str, Any]:
    if _is_number(value):
        return {"loss": _finite_loss(value), "status": STATUS_OK}
    if not isinstance(value, dict):
        raise InvalidResult(
            f"objective returned {_describe(value)}; expected a number (the loss) or a "
            "dict with 'loss' and 'status'")
    status = value.get("status")
    if status not in STATUS_STRINGS:
        raise InvalidResult(f"result has unknown status {status!r}; use 'ok' or 'fail'")
    if status not in (STATUS_OK, STATUS_FAIL):
        raise InvalidResult(f"result status {status!r} is not a final status; use 'ok' or "
                            "'fail'")
    loss = None
    if status == STATUS_OK:
        if "loss" not in value:
            raise InvalidResult("result has status 'ok' but no 'loss'")
        if not _is_number(value["loss"]):
            raise InvalidResult(f"result['loss'] is {_describe(value['loss'])}, not a number")
        loss = _finite_loss(value["loss"])
    result = _jsonable(value, "result")
    if loss is not None:
        result["loss"] = loss
    return result


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))


def _finite_loss(value: Any) -> float:
    loss = float(value)
    if math.isnan(loss):
        raise InvalidResult("loss is NaN")
    if math.isinf(loss):
        raise InvalidResult(f"loss is {'+' if loss > 0 else '-'}inf")
    return loss


def _jsonable(value: Any, path: str) -> Any:
    """A JSON-safe copy (NumPy scalars and arrays converted), or :class:`InvalidResult`
    naming the first offending key."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidResult(f"{path} is {value!r}, which JSON cannot hold")
        return value
    if isinstance(value, np.generic):
        return _jsonable(value.item(), path)
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist(), path)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str) or key.startswith("$") or "." in key:
                raise InvalidResult(f"{path} has key {key!r}; keys must be strings without "
                                    "'.' or a leading '$'")
            out[key] = _jsonable(item, f"{path}[{key!r}]")
        return out
    raise InvalidResult(f"{path} is {_describe(value)}, which is not JSON")


def _describe(value: Any) -> str:
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{type(value).__name__} {text}"
