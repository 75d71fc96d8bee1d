"""One test bed and one provisioned cluster per test session, shared by the cluster,
Flower, provisioning and Ansible tests (built on first use, torn down at session end).

The cluster: three test hosts with two (stand-in) GPUs each, provisioned from a YAML
inventory with the project's own provisioning, workers on queue ``trials.default`` of
the cluster's own services. Tests that stop or cut off hosts restore the cluster
before they end (by provisioning again, which is idempotent).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker.settings import Settings
from broker.store import TrialStore, connect
from tests.helpers import WORKSPACE
from tests.testbed import Testbed, unavailable
from workers.provisioning import FleetResult, Host, ProvisionOptions, load_inventory, provision

HOSTS = ("h1", "h2", "h3")

_testbed: Testbed | None = None
_cluster: Cluster | None = None


@dataclass
class Cluster:
    testbed: Testbed
    hosts: list[Host]
    inventory: Path
    settings: Settings
    store: TrialStore
    first: FleetResult
    """The result of the first provisioning (every worker ``started``)."""

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.hosts]

    @property
    def secrets(self) -> list[str]:
        """The services' passwords and the shared secret: never to be printed or logged."""
        services = self.testbed.services
        return [services.redis_password, services.mongo_password, services.secret]

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for ``python -m tuner`` against the cluster's services."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("TUNER_")}
        return {**base, **self.settings.to_env(), "TUNER_PROGRESS": "0", **extra}

    def tuner(self, *args: str, timeout: float = 240, **extra: str) -> Any:
        return subprocess.run([sys.executable, "-m", "tuner", *args], cwd=self.testbed.root,
                              env=self.env(**extra), capture_output=True, text=True,
                              timeout=timeout)

    def options(self, **changes: Any) -> ProvisionOptions:
        return ProvisionOptions(**{"workspace": str(WORKSPACE),
                                   "known_hosts": self.testbed.known_hosts, **changes})

    def reprovision(self, *names: str) -> FleetResult:
        """Provision again (all hosts, or ``names``): restores what a test stopped."""
        hosts = [h for h in self.hosts if not names or h.name in names]
        result = provision(hosts, self.settings, self.options())
        assert result.ok, {k: str(v) for k, v in result.failed.items()}
        return result


def testbed(config: pytest.Config) -> Testbed:
    """The session's test bed; skips (with the reason) where one cannot be built."""
    global _testbed
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    if _testbed is None:
        root = Path(tempfile.mkdtemp(prefix="tuner-testbed-"))
        bed = Testbed(root)
        config.add_cleanup(_teardown)
        _testbed = bed
        bed.start()
    return _testbed


def _teardown() -> None:
    """Stop everything the test bed runs and delete its folder (idempotent)."""
    global _testbed, _cluster
    bed, _testbed = _testbed, None
    if _cluster is not None:
        _cluster.store.close()
        _cluster = None
    if bed is not None:
        bed.stop()
        shutil.rmtree(bed.root, ignore_errors=True)


def module_cluster(request: pytest.FixtureRequest) -> Cluster:
    """The cluster for a module-scoped fixture named ``cluster`` (in modules whose tests
    are marked ``testbed``); torn down after the last module with such tests, so that
    its workers do not keep loading the machine while the rest of the suite runs."""
    built = cluster(request.config)
    module = request.node

    def release() -> None:
        items = request.session.items
        mine = [i for i, item in enumerate(items) if item.getparent(pytest.Module) is module]
        later = items[max(mine) + 1:] if mine else []
        if not [item for item in later if item.get_closest_marker("testbed")]:
            _teardown()

    request.addfinalizer(release)
    return built


def write_inventory(path: Path, bed: Testbed, names: list[str],
                    **group_vars: Any) -> Path:
    """A YAML Ansible inventory of ``names`` (group ``workers``)."""
    hosts = {name: {"ansible_host": bed.hosts[name].address, "ansible_user": "root",
                    "ansible_ssh_private_key_file": str(bed.client_key)}
             for name in names}
    inventory = {"all": {"children": {"workers": {"hosts": hosts, "vars": group_vars}}}}
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


def cluster(config: pytest.Config) -> Cluster:
    """The session's provisioned cluster (three hosts, two GPUs each)."""
    global _cluster
    bed = testbed(config)
    if _cluster is None:
        names = [bed.add_host(label).name for label in HOSTS]
        bed.trust(*names)
        inventory = write_inventory(bed.root / "inventory.yml", bed, names,
                                    tuner_venv_system_site_packages=True)
        settings = bed.services.settings(state_dir=bed.root / "state", workspace=WORKSPACE)
        hosts = load_inventory(inventory)
        store = connect(settings)
        first = provision(hosts, settings, ProvisionOptions(
            workspace=str(WORKSPACE), known_hosts=bed.known_hosts))
        assert first.ok, {k: str(v) for k, v in first.failed.items()}
        _cluster = Cluster(bed, hosts, inventory, settings, store, first)
    return _cluster


def worker_environ(pid: int) -> dict[str, str]:
    """The environment of a process (test hosts share this machine's process table)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0")
                if "=" in item)


def worker_argv(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().rstrip("\0").split("\0")
