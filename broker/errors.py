"""The project's exceptions. One root, each carrying its evidence.

Library code raises these; only the command-line adapters turn them into exit codes
and one-line messages.
"""

from __future__ import annotations


class TunerError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(TunerError):
    """A service cannot be reached, or the configuration is incomplete or inconsistent."""

    def __init__(self, message: str, *, address: str | None = None) -> None:
        super().__init__(message)
        self.address = address


class SpaceError(TunerError):
    """The search space is malformed; ``label`` names the offending hyperparameter."""

    def __init__(self, message: str, *, label: str | None = None) -> None:
        super().__init__(message)
        self.label = label


class ObjectiveError(TunerError):
    """The objective cannot be referenced (tuner side) or located (worker side)."""


class SignatureError(TunerError):
    """An experiment spec read from MongoDB does not carry a valid signature of the
    shared secret: it was planted or tampered with, and nothing of it is executed."""


class ExperimentError(TunerError):
    """An experiment cannot be created or resumed as asked (e.g. its space changed)."""


class ServiceError(TunerError):
    """A local default service failed to start or stop; ``log`` holds its log tail."""

    def __init__(self, message: str, *, log: str = "") -> None:
        super().__init__(message)
        self.log = log


class StoreContractError(TunerError):
    """The MongoDB server answered in a way the store's contract rules out (e.g. a
    conditional update touched another document); nothing more is written."""


class SoftTimeLimitExceeded(Exception):
    """Raised inside the objective when its trial reaches the soft time limit
    (``trial_soft_timeout``): catch it to save a checkpoint, then re-raise or return.
    The hard limit (``trial_timeout``) kills the trial's process group regardless."""
