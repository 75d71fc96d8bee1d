#!/usr/bin/env bash
# Install everything, then run the whole test suite (it starts its own Redis, MongoDB
# wire server and Celery workers, and SSH test hosts when run as root). Extra arguments
# go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The dashboard's browser tests drive Debian's headless Chromium.
if ! command -v chromedriver >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "note: install chromium and chromium-driver to run the dashboard's browser tests" >&2
    fi
fi
# The cluster tests build test hosts: network namespaces (iproute2) with a real sshd.
if [ ! -x /usr/sbin/sshd ] || ! command -v ip >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq openssh-server iproute2 >/dev/null
    else
        echo "note: run as root with openssh-server and iproute2 for the cluster tests" >&2
    fi
fi
exec .venv/bin/python -m pytest "$@"
