"""Search spaces as data: validate, describe, encode to JSON and decode again.

A Hyperopt space is a graph of ``pyll`` nodes. :func:`encode` turns it into plain
JSON (nodes in topological order, literals tagged where JSON alone would lose their
type), so that the space can be stored with the experiment, compared on resume,
signed, and rebuilt by a worker without running any code from the database.
:func:`decode` only rebuilds nodes from ``pyll``'s registry and refuses the few that
could call arbitrary functions.

:func:`validate` rejects malformed spaces before anything is queued, naming the label.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np
from hyperopt.pyll import Apply, Literal, as_apply, scope, toposort

from broker.errors import SpaceError

FORMAT_VERSION = 1
MAX_NODES = 20_000
MAX_DEPTH = 200

DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "uniform": ("low", "high"),
    "quniform": ("low", "high", "q"),
    "loguniform": ("low", "high"),
    "qloguniform": ("low", "high", "q"),
    "normal": ("mu", "sigma"),
    "qnormal": ("mu", "sigma", "q"),
    "lognormal": ("mu", "sigma"),
    "qlognormal": ("mu", "sigma", "q"),
    "randint": ("low", "high"),
    "categorical": ("p",),
}
"""The distributions a ``hyperopt_param`` node may draw from, with their argument names."""

UNSAFE_OPS = frozenset({
    "call", "callpipe1", "partial", "getattr", "call_method", "call_method_pure",
    "copy_call_method_pure", "pdb_settrace", "Raise", "curtime", "rng_from_seed",
})
"""pyll operations that can reach arbitrary code; never rebuilt from stored data."""


# -- validation ----------------------------------------------------------------------------


def validate(space: Any) -> Apply:
    """The space as a ``pyll`` graph, or :class:`SpaceError` naming what is wrong."""
    try:
        expr = as_apply(space)
        nodes = toposort(expr)
    except Exception as exc:  # whatever walking a foreign object raises
        raise SpaceError(f"not a Hyperopt search space: {type(exc).__name__}: {exc}") from None
    if len(nodes) > MAX_NODES:
        raise SpaceError(f"search space has {len(nodes)} nodes; the limit is {MAX_NODES}")
    _check_depth(nodes)
    labels: dict[str, Apply] = {}
    for node in nodes:
        if isinstance(node, Apply) and node.name == "hyperopt_param":
            label = _label_of(node)
            if label in labels and labels[label] is not node:
                raise SpaceError(f"label {label!r} is used by two different hyperparameters",
                                 label=label)
            labels[label] = node
            _check_distribution(label, node.pos_args[1])
    return expr


def _check_depth(nodes: list[Apply]) -> None:
    depth: dict[int, int] = {}
    for node in nodes:  # topological order: inputs come before the nodes using them
        inputs = node.inputs() if isinstance(node, Apply) else []
        depth[id(node)] = 1 + max((depth[id(i)] for i in inputs), default=0)
        if depth[id(node)] > MAX_DEPTH:
            raise SpaceError(f"search space is nested deeper than {MAX_DEPTH} levels")


def _label_of(node: Apply) -> str:
    label = node.pos_args[0]
    if not isinstance(label, Literal) or not isinstance(label.obj, str) or not label.obj:
        raise SpaceError("a hyperparameter's label must be a non-empty string")
    return label.obj


def _check_distribution(label: str, dist: Apply) -> None:
    name = getattr(dist, "name", None)
    if name not in DISTRIBUTIONS:
        raise SpaceError(f"hyperparameter {label!r} draws from unknown distribution {name!r}",
                         label=label)
    args = _literal_args(dist)
    if name == "categorical":
        p = args.get("p")
        if p is not None:
            p = np.asarray(p, dtype=float)
            if p.size == 0 or not np.all(np.isfinite(p)) or np.any(p < 0) or not math.isclose(
                    float(p.sum()), 1.0, rel_tol=1e-6):
                raise SpaceError(f"hp.pchoice {label!r}: probabilities must be >= 0 and sum "
                                 "to 1", label=label)
        return
    numbers = {k: v for k, v in args.items() if v is not None}
    for key, value in numbers.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(
                value):
            raise SpaceError(f"{name} {label!r}: {key} must be a finite number, got {value!r}",
                             label=label)
    if name == "randint":
        low, high = numbers.get("low", 0), numbers.get("high")
        if high is not None and high <= low:
            what = "hp.choice" if low == 0 else "hp.randint"
            raise SpaceError(f"{what} {label!r} has no options (upper bound {high} <= {low})",
                             label=label)
    if "low" in numbers and "high" in numbers and name != "randint" and not (
            numbers["low"] < numbers["high"]):
        raise SpaceError(f"{name} {label!r}: low ({numbers['low']}) must be below high "
                         f"({numbers['high']})", label=label)
    if "sigma" in numbers and not numbers["sigma"] > 0:
        raise SpaceError(f"{name} {label!r}: sigma must be positive", label=label)
    if "q" in numbers and not numbers["q"] > 0:
        raise SpaceError(f"{name} {label!r}: q must be positive", label=label)


def _literal_args(dist: Apply) -> dict[str, Any]:
    """The distribution's arguments that are literals (expressions are left unchecked)."""
    names = DISTRIBUTIONS[dist.name]
    if dist.name == "randint" and len(dist.pos_args) == 1:
        names = ("high",)
    values: dict[str, Any] = {}
    pairs = list(zip(names, dist.pos_args, strict=False)) + list(dist.named_args)
    for key, arg in pairs:
        if isinstance(arg, Literal):
            values[key] = arg.obj
        elif isinstance(arg, Apply) and arg.name == "pos_args" and all(
                isinstance(a, Literal) for a in arg.pos_args):
            values[key] = [a.obj for a in arg.pos_args]
    return values


def describe(expr: Apply) -> list[dict[str, Any]]:
    """One entry per hyperparameter: label, distribution and literal arguments.

    What dashboards and exports need (e.g. to draw log axes); not enough to rebuild
    the space (use :func:`encode` for that).
    """
    params = []
    for node in toposort(expr):
        if isinstance(node, Apply) and node.name == "hyperopt_param":
            dist = node.pos_args[1]
            args = {k: _jsonable(v) for k, v in _literal_args(dist).items()}
            params.append({"label": _label_of(node), "dist": dist.name, "args": args})
    return sorted(params, key=lambda p: p["label"])


# -- encoding --------------------------------------------------------------------------------


def encode(expr: Apply) -> dict[str, Any]:
    """The graph as JSON-compatible data. ``portable`` is false when a literal (a class,
    a function, an arbitrary object) cannot be represented; such a space can still be
    compared (by the object's qualified name) but only rebuilt by running user code."""
    nodes = toposort(expr)
    index = {id(node): i for i, node in enumerate(nodes)}
    out: list[dict[str, Any]] = []
    portable = True
    for node in nodes:
        if isinstance(node, Literal):
            value, ok = _encode_literal(node.obj)
            portable &= ok
            out.append({"lit": value})
        else:
            out.append({
                "op": node.name,
                "args": [index[id(a)] for a in node.pos_args],
                "kwargs": [[k, index[id(v)]] for k, v in node.named_args],
                "o_len": node.o_len,
                "pure": bool(node.pure),
            })
            portable &= node.name not in UNSAFE_OPS
    return {"version": FORMAT_VERSION, "nodes": out, "root": index[id(expr)],
            "portable": portable}


def fingerprint(encoded: dict[str, Any]) -> str:
    """A stable hash of an encoded space: equal spaces have equal fingerprints."""
    canonical = json.dumps({"nodes": encoded["nodes"], "root": encoded["root"]},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def decode(encoded: dict[str, Any]) -> Apply:
    """Rebuild a graph from :func:`encode`'s output, using only ``pyll``'s registry."""
    if encoded.get("version") != FORMAT_VERSION:
        raise SpaceError(f"unsupported space format {encoded.get('version')!r}")
    if not encoded.get("portable"):
        raise SpaceError("this search space holds objects that cannot travel as data; "
                         "run the tuning from a script so that workers rebuild it")
    built: list[Any] = []
    for item in encoded["nodes"]:
        if "lit" in item:
            built.append(Literal(_decode_literal(item["lit"])))
            continue
        op = item["op"]
        if op in UNSAFE_OPS or op not in scope._impls:
            raise SpaceError(f"search space uses operation {op!r}, which is not allowed here")
        built.append(Apply(
            op,
            [built[i] for i in item["args"]],
            [(k, built[i]) for k, i in item["kwargs"]],
            o_len=item["o_len"],
            pure=item["pure"],
        ))
    return built[encoded["root"]]


def _encode_literal(obj: Any) -> tuple[Any, bool]:
    if obj is None or isinstance(obj, (bool, str)):
        return obj, True
    if isinstance(obj, (int, float)):
        if isinstance(obj, float) and not math.isfinite(obj):
            return {"$float": repr(obj)}, True
        return obj, True
    if isinstance(obj, np.generic):
        return _encode_literal(obj.item())
    if isinstance(obj, np.ndarray):
        items = [_encode_literal(x) for x in obj.tolist()]
        return {"$ndarray": [v for v, _ in items], "dtype": str(obj.dtype)}, all(
            ok for _, ok in items)
    if isinstance(obj, (list, tuple)):
        items = [_encode_literal(x) for x in obj]
        values = [v for v, _ in items]
        ok = all(o for _, o in items)
        return ({"$tuple": values} if isinstance(obj, tuple) else values), ok
    if isinstance(obj, dict) and all(isinstance(k, str) for k in obj):
        items = {k: _encode_literal(v) for k, v in obj.items()}
        return {"$dict": {k: v for k, (v, _) in items.items()}}, all(
            ok for _, ok in items.values())
    return {"$object": _object_name(obj)}, False


def _decode_literal(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode_literal(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "$tuple" in value:
        return tuple(_decode_literal(v) for v in value["$tuple"])
    if "$dict" in value:
        return {k: _decode_literal(v) for k, v in value["$dict"].items()}
    if "$ndarray" in value:
        return np.asarray(_decode_literal(value["$ndarray"]), dtype=value["dtype"])
    if "$float" in value:
        return float(value["$float"])
    raise SpaceError(f"cannot rebuild literal {value!r}")


def _object_name(obj: Any) -> str:
    target = obj if hasattr(obj, "__qualname__") else type(obj)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}"


def _jsonable(value: Any) -> Any:
    encoded, _ = _encode_literal(value)
    return encoded


def to_jsonable(value: Any) -> Any:
    """A JSON-safe rendering of a point as the objective received it, for humans and
    dashboards: tuples become lists, other objects their qualified name."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    return _object_name(value)
