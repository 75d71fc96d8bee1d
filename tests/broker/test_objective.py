"""Objective references, script replay and spec signatures."""

from __future__ import annotations

import json
import textwrap

import objectives
import pytest
from hyperopt import hp

from broker import objective, space
from broker import spec as spec_module
from broker.errors import ObjectiveError, SignatureError
from broker.settings import Secret
from tests.helpers import WORKSPACE


def test_module_reference_resolves_on_the_worker():
    ref = objective.reference(objectives.quadratic, WORKSPACE, 0)
    assert ref["kind"] == "module"  # pytest's own __main__ is outside the workspace
    assert (ref["module"], ref["qualname"], ref["root"]) == ("objectives", "quadratic", ".")
    fn, rebuilt = objective.load(ref, WORKSPACE)
    assert fn is objectives.quadratic and rebuilt is None


def test_a_changed_module_is_refused(tmp_path):
    (tmp_path / "mod_a.py").write_text("def f(p):\n    return 1.0\n")
    ref = {"kind": "module", "module": "mod_a", "qualname": "f", "root": ".",
           "sha256": "0" * 64}
    with pytest.raises(ObjectiveError, match="differs from the tuner's copy"):
        objective.load(ref, tmp_path)


def test_lambdas_need_a_script():
    with pytest.raises(ObjectiveError, match="run the tuning from a script"):
        objective.reference(lambda p: 0.0, WORKSPACE, 0)


SCRIPT = textwrap.dedent("""
    import sys
    from hyperopt import hp
    from broker import objective

    DATA = {"scale": float(sys.argv[1])}

    def first(p):
        return p["x"]

    def second(p):
        return p["x"] * DATA["scale"]

    best = {}
    for fn, label in ((first, "a"), (second, "b")):
        objective.capture_point(fn, {"x": hp.uniform(label, 0, 1), "obj": dict})
        best[label] = "ran"   # in a worker, earlier calls return and the script goes on
""")


def test_script_replay_captures_the_wanted_call_with_its_globals(tmp_path):
    script = tmp_path / "tune.py"
    script.write_text(SCRIPT)
    ref = {"kind": "script", "path": "tune.py", "module": None, "argv": ["3"], "call": 1,
           "qualname": "second", "sha256": objective.file_sha256(script)}
    fn, captured_space = objective.load(ref, tmp_path)
    assert fn.__name__ == "second" and fn({"x": 2.0}) == 6.0
    assert captured_space["obj"] is dict  # the space's Python objects, exactly
    assert not objective.capturing()


def test_script_replay_that_never_reaches_the_call_is_an_error(tmp_path):
    script = tmp_path / "tune.py"
    script.write_text("print('no tuning here')\n")
    ref = {"kind": "script", "path": "tune.py", "module": None, "argv": [], "call": 0,
           "qualname": "f", "sha256": objective.file_sha256(script)}
    with pytest.raises(ObjectiveError, match="never reached its tuning call"):
        objective.load(ref, tmp_path)
    script.write_text("import sys\nsys.exit(3)\n")
    ref["sha256"] = objective.file_sha256(script)
    with pytest.raises(ObjectiveError, match=r"exited \(3\)"):
        objective.load(ref, tmp_path)


def test_spec_signature_detects_any_change():
    expr = space.validate({"x": hp.uniform("x", 0, 1)})
    spec = spec_module.build(objectives.quadratic, expr, WORKSPACE, 0)
    secret = Secret("k")
    text, signature = spec_module.seal(spec, secret)
    assert spec_module.open_spec(text, signature, secret) == spec
    tampered = json.loads(text)
    tampered["objective"]["module"] = "evil"
    with pytest.raises(SignatureError, match="does not match"):
        spec_module.open_spec(json.dumps(tampered), signature, secret)
    with pytest.raises(SignatureError, match="does not match"):
        spec_module.open_spec(text, signature, Secret("other"))
    with pytest.raises(SignatureError, match="not signed"):
        spec_module.open_spec(text, None, secret)


def test_a_module_objective_needs_a_portable_space():
    expr = space.validate({"act": hp.choice("act", [len, dict])})
    with pytest.raises(ObjectiveError, match="cannot travel as data"):
        spec_module.build(objectives.quadratic, expr, WORKSPACE, 0)
