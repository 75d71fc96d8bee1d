"""The user-facing API: ``hyper_tune`` (Gradient-compatible) and ``ConfigError``."""

from broker.errors import ConfigError, SoftTimeLimitExceeded, SpaceError, TunerError
from sdk.tune import hyper_tune
from tuner.trials import DistributedTrials

__all__ = ["ConfigError", "DistributedTrials", "SoftTimeLimitExceeded", "SpaceError",
           "TunerError", "hyper_tune"]
