#!/usr/bin/env bash
# Install everything, then run the whole test suite (it starts its own Redis, MongoDB
# wire server and Celery workers). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
