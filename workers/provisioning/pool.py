"""Workers for one experiment: provision (or reuse) them, stop what was started.

The hosted product created workers for each experiment; :func:`experiment_workers`
does the same on your hosts for ``hyperparameters run --hosts``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from broker.errors import ConfigError
from broker.settings import Settings
from workers.provisioning import state
from workers.provisioning.fleet import FleetResult
from workers.provisioning.hosts import Host
from workers.provisioning.operations import StopReport, stop_workers
from workers.provisioning.provisioner import (
    HostReport,
    ProvisionOptions,
    all_workers,
    provision,
    started_workers,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterRequest:
    """Where an experiment's workers run: ``hosts``, how to provision them and whether
    to stop the workers this run started when it ends."""

    hosts: Sequence[Host]
    options: ProvisionOptions
    stop_workers: bool = False


@contextmanager
def experiment_workers(
        request: ClusterRequest, settings: Settings, *,
        on_provisioned: Callable[[FleetResult[HostReport]], None] | None = None,
        on_stopped: Callable[[FleetResult[StopReport]], None] | None = None,
) -> Iterator[int]:
    """Provision ``request.hosts`` for an experiment and yield how many workers serve
    it. Hosts that fail are reported (``on_provisioned``) and left out; no worker at
    all is a :class:`ConfigError`. With ``request.stop_workers``, the workers this call
    started (not those it found running) are stopped on exit, even on error."""
    result = provision(request.hosts, settings, request.options)
    if on_provisioned is not None:
        on_provisioned(result)
    serving = [w for w in all_workers(result) if w.action != "failed"]
    started = started_workers(result)
    try:
        if not serving:
            reasons = "; ".join(str(e) for e in result.failed.values()) or "no GPU or CPU slot"
            raise ConfigError(f"no worker could be provisioned: {reasons}")
        yield len(serving)
    finally:
        if request.stop_workers and started:
            hosts = [h for h in request.hosts if h.name in started]
            stopped = stop_workers(hosts, known_hosts=request.options.known_hosts,
                                   names=started)
            state.forget_workers(Path(settings.state_dir).expanduser(),
                                 {n: r.stopped for n, r in stopped.succeeded.items()})
            if on_stopped is not None:
                on_stopped(stopped)
