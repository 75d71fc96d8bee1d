"""Tune the digits MLP. Run it through the tuner (it starts Redis, MongoDB and workers):

    python -m tuner hyperparameters run --name digits-mlp --tuning-command "python tune.py" \
        --worker-count 2 --workspace .

The space has the shape of Hyperopt's classic examples: a log-uniform learning rate, a
quantized batch size, a choice of optimizer whose branches carry their own parameters,
and a nested choice of architecture.
"""

from math import log

from hyperopt import hp
from hyperopt.pyll import scope
from model import train_model

from sdk import hyper_tune

space = {
    "learning_rate": hp.loguniform("learning_rate", log(1e-4), log(3e-1)),
    "batch_size": scope.int(hp.quniform("batch_size", 16, 256, 16)),
    "alpha": hp.loguniform("alpha", log(1e-6), log(1e-2)),
    "optimizer": hp.choice("optimizer", [
        {"name": "adam", "beta_1": hp.uniform("adam_beta_1", 0.8, 0.99)},
        {"name": "sgd", "momentum": hp.uniform("sgd_momentum", 0.5, 0.99),
         "nesterov": hp.choice("sgd_nesterov", [True, False])},
    ]),
    "architecture": hp.choice("architecture", [
        {"layers": [scope.int(hp.quniform("units", 16, 256, 16))]},
        {"layers": [scope.int(hp.quniform("units_1", 32, 256, 32)),
                    scope.int(hp.quniform("units_2", 16, 128, 16))]},
    ]),
    "epochs": 40,
}

if __name__ == "__main__":
    result = hyper_tune(train_model, space, max_evals=50)  # TPE: tuner.tpe by default
    if result["best"] is not None:
        print(f"best validation accuracy {1 - result['best_loss']:.4f}")
