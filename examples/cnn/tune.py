"""Tune the digits CNN (PyTorch). Locally (starts Redis, MongoDB and workers):

    python -m tuner hyperparameters run --name digits-cnn --tuning-command "python tune.py" \
        --worker-count 2 --workspace .

On GPU hosts (one worker per GPU, provisioned over SSH):

    python -m tuner hyperparameters run --name digits-cnn --tuning-command "python tune.py" \
        --hosts gpu1,gpu2 --user ml --key ~/.ssh/id_ed25519 --workspace . --stop-workers
"""

from math import log

from hyperopt import hp, tpe
from hyperopt.pyll import scope
from model import train_model

from sdk import hyper_tune

space = {
    "learning_rate": hp.loguniform("learning_rate", log(1e-4), log(1e-1)),
    "batch_size": scope.int(hp.quniform("batch_size", 16, 256, 16)),
    "weight_decay": hp.loguniform("weight_decay", log(1e-6), log(1e-2)),
    "channels": hp.choice("channels", [8, 16, 32]),
    "kernel_size": hp.choice("kernel_size", [3, 5]),
    "hidden": scope.int(hp.quniform("hidden", 32, 256, 32)),
    "dropout": hp.uniform("dropout", 0.0, 0.5),
    "optimizer": hp.choice("optimizer", [
        {"name": "adam"},
        {"name": "sgd", "momentum": hp.uniform("sgd_momentum", 0.5, 0.99),
         "nesterov": hp.choice("sgd_nesterov", [True, False])},
    ]),
    "epochs": 15,
}

if __name__ == "__main__":
    result = hyper_tune(train_model, space, algo=tpe.suggest, max_evals=40)
    if result["best"] is not None:
        print(f"best validation loss {result['best_loss']:.4f}: {result['best']}")
