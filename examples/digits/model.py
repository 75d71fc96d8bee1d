"""A small neural network on scikit-learn's digits data set (ships with scikit-learn,
no download): the objective of the example experiment.

The data is loaded once per process at import; each worker imports this module once
and then evaluates many trials with it.
"""

from __future__ import annotations

import time
import warnings

from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

_X, _y = load_digits(return_X_y=True)
_X = StandardScaler().fit_transform(_X)
X_TRAIN, X_VAL, Y_TRAIN, Y_VAL = train_test_split(_X, _y, test_size=0.25, random_state=0,
                                                  stratify=_y)


def train_model(params: dict) -> dict:
    """Train an MLP with ``params``; the loss is the validation error rate."""
    optimizer = params["optimizer"]
    options = {}
    if optimizer["name"] == "adam":
        options["beta_1"] = optimizer["beta_1"]
    else:
        options["momentum"] = optimizer["momentum"]
        options["nesterovs_momentum"] = optimizer["nesterov"]
    model = MLPClassifier(
        hidden_layer_sizes=tuple(params["architecture"]["layers"]),
        solver=optimizer["name"],
        learning_rate_init=params["learning_rate"],
        batch_size=params["batch_size"],
        alpha=params["alpha"],
        max_iter=params["epochs"],
        random_state=0,
        **options,
    )
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X_TRAIN, Y_TRAIN)
    accuracy = float(model.score(X_VAL, Y_VAL))
    print(f"accuracy {accuracy:.4f} after {model.n_iter_} epochs")
    return {"loss": 1.0 - accuracy, "status": "ok", "accuracy": accuracy,
            "epochs_run": int(model.n_iter_), "train_seconds": time.perf_counter() - started}
