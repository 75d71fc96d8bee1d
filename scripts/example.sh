#!/usr/bin/env bash
# Install everything, then tune the digits MLP on the local default: a password-protected
# Redis and a MongoDB wire server started on loopback for you, plus local workers.
# Extra arguments go to `hyperparameters run` (e.g. --max-evals 20 --worker-count 4).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cd examples/digits
exec ../../.venv/bin/python -m tuner hyperparameters run --name digits-mlp \
    --tuning-command "python tune.py" --worker-count 2 --workspace . "$@"
