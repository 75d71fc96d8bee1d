"""Errors of fleet operations, each carrying its host and the step that failed."""

from __future__ import annotations

from broker.errors import TunerError


class ProvisionError(TunerError):
    """One host could not be provisioned, inspected or stopped.

    ``host`` names it (its inventory name), ``step`` says how far it got (``connect``,
    ``python``, ``venv``, ``install``, ``workspace``, ``gpus``, ``workers``, ...) and
    ``output`` holds the tail of what the failing remote command printed.
    """

    def __init__(self, host: str, step: str, message: str, *, output: str = "") -> None:
        super().__init__(f"{host}: {step}: {message}")
        self.host = host
        self.step = step
        self.reason = message
        self.output = output


class HostKeyError(ProvisionError):
    """The host's SSH key is unknown (and trusting new hosts was not asked for) or does
    not match the one recorded in ``known_hosts`` (never accepted)."""


class InventoryError(TunerError):
    """A host list or inventory file cannot be read; ``source`` names it."""

    def __init__(self, message: str, *, source: str = "") -> None:
        super().__init__(f"{source}: {message}" if source else message)
        self.source = source


class FleetError(TunerError):
    """Some hosts of a fleet operation failed; ``result`` holds every host's outcome."""

    def __init__(self, message: str, result: object) -> None:
        super().__init__(message)
        self.result = result
