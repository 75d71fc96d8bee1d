"""Fresh local services for one benchmark run, in a temporary folder."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from broker.services import LocalServices
from broker.settings import Settings

WORKSPACE = Path(__file__).resolve().parent / "workspace"


@contextmanager
def bench_services(name: str, **overrides: Any) -> Iterator[tuple[Settings, LocalServices]]:
    """Start Redis and the MongoDB wire server under a temporary ``tuner-<name>-`` folder
    (the settings' ``state_dir``), database ``name``; stop them and remove the folder at
    the end, whatever happens."""
    with tempfile.TemporaryDirectory(prefix=f"tuner-{name}-") as tmp:
        state = Path(tmp)
        services = LocalServices(state)
        connection, _ = services.up()
        try:
            yield Settings(broker_url=connection.broker_url, mongo_url=connection.mongo_url,
                           secret=connection.secret, state_dir=state, workspace=WORKSPACE,
                           mongo_db=name, progress=False, **overrides), services
        finally:
            services.down()
