"""``examples/cnn``: the PyTorch CNN trains and reports a validation loss (on the CPU
here); skipped where PyTorch is not installed (it is not a dependency)."""

from __future__ import annotations

import sys

import pytest

from tests.helpers import REPO

torch = pytest.importorskip("torch", reason="examples/cnn needs PyTorch (pip install torch)")


def test_the_cnn_example_trains_and_its_space_samples():
    from hyperopt.pyll.stochastic import sample

    saved = {name: sys.modules.pop(name, None) for name in ("model", "tune")}
    sys.path.insert(0, str(REPO / "examples" / "cnn"))  # (the digits example has a model too)
    try:
        import model
        import tune
    finally:
        sys.path.remove(str(REPO / "examples" / "cnn"))
        for name, module in saved.items():
            sys.modules.pop(name, None)
            if module is not None:
                sys.modules[name] = module
    params = {**sample(tune.space), "epochs": 2, "learning_rate": 0.01,
              "optimizer": {"name": "adam"}}
    result = model.train_model(params)
    assert result["status"] == "ok" and 0 < result["loss"] < 2.3
    assert result["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
