"""Shared fixtures: real services and real worker processes, started once per session.

* ``services``: a real ``redis-server`` (password on) and an ``nx-27017`` MongoDB wire
  server, via the project's own local-default launcher.
* ``workers``: two real ``python -m workers`` processes on the default queue, running
  code from ``tests/workspace``. Tests that kill workers start their own pool on a
  queue of their own (``own_pool``), so the shared pool stays intact.
* ``cluster`` (a module-scoped fixture of the tests marked ``testbed``, built by
  ``tests/testbed/cluster.py``): SSH test hosts in network namespaces with provisioned
  workers, shared by every such test; those tests run last.

Set ``TUNER_TEST_MONGO_URL`` to run the MongoDB contract test against a real MongoDB.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker.services import LocalServices
from broker.settings import Settings
from broker.store import TrialStore, connect
from tests.helpers import WORKSPACE, WorkerPool, unique

sys.path.insert(0, str(WORKSPACE))


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                   items: list[pytest.Item]) -> None:
    """Tests on the SSH test cluster (``tests/testbed``) run last and together: it is
    built once, on first use, and torn down after its last test, so that its hosts'
    workers do not load the machine while the other tests run."""
    on_cluster = [item for item in items if item.get_closest_marker("testbed")]
    if on_cluster:
        chosen = set(on_cluster)
        items[:] = [item for item in items if item not in chosen] + on_cluster


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    state = tmp_path_factory.mktemp("state")
    yield state
    LocalServices(state).down()


@pytest.fixture(scope="session")
def settings(services_dir: Path) -> Settings:
    connection, _ = LocalServices(services_dir).up()
    return Settings(
        broker_url=connection.broker_url,
        mongo_url=connection.mongo_url,
        secret=connection.secret,
        mongo_db="tuner_test",
        state_dir=services_dir,
        workspace=WORKSPACE,
        heartbeat_s=0.5,
        lease_s=3.0,
        progress=False,
    )


@pytest.fixture(scope="session")
def store(settings: Settings) -> Iterator[TrialStore]:
    store = connect(settings)
    yield store
    store.close()


@pytest.fixture(scope="session")
def workers(settings: Settings, store: TrialStore) -> Iterator[WorkerPool]:
    pool = WorkerPool(settings, store, machine_type=settings.machine_type, prefix="shared")
    pool.start(2)
    yield pool
    pool.stop()


@pytest.fixture
def own_pool(settings: Settings, store: TrialStore) -> Iterator[Callable[..., WorkerPool]]:
    """``own_pool(prefix, count=2, settings=None)``: started workers on a queue of their
    own (so a test may kill them), stopped when the test ends."""
    pools: list[WorkerPool] = []

    def start(prefix: str, count: int = 2, settings_: Settings | None = None) -> WorkerPool:
        pool = WorkerPool(settings_ or settings, store, machine_type=unique(prefix),
                          prefix=prefix)
        pools.append(pool)
        pool.start(count)
        return pool

    yield start
    for pool in pools:
        pool.stop()
