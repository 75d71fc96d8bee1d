"""hyper_tune's contract at its edges: unreachable services, malformed spaces."""

from __future__ import annotations

import time

import objectives
import pytest
from hyperopt import hp

from broker.errors import ConfigError, SpaceError
from sdk import hyper_tune


def _space():
    return {"x": hp.uniform("x", 0, 1)}


@pytest.mark.parametrize("url", ["mongodb://127.0.0.1:9/", "mongodb://10.255.255.1:27017/"])
def test_unreachable_mongodb_is_a_config_error_within_10_s(settings, url):
    started = time.monotonic()
    with pytest.raises(ConfigError) as error:
        hyper_tune(objectives.quadratic, _space(), max_evals=2,
                   settings=settings.replace(mongo_url=url))
    assert time.monotonic() - started < 10
    assert url.split("//")[1].rstrip("/") in str(error.value)


@pytest.mark.parametrize("url", ["redis://:pw@127.0.0.1:9/0", "redis://:pw@10.255.255.1:6379/0"])
def test_unreachable_broker_is_a_config_error_within_10_s(settings, url):
    started = time.monotonic()
    with pytest.raises(ConfigError) as error:
        hyper_tune(objectives.quadratic, _space(), max_evals=2,
                   settings=settings.replace(broker_url=url))
    assert time.monotonic() - started < 10
    assert "cannot reach the broker" in str(error.value)
    assert ":pw@" not in str(error.value)  # the password is never printed


def test_a_broker_password_mismatch_is_a_config_error(settings):
    wrong = settings.broker_url.replace("redis://:", "redis://:wrong")
    with pytest.raises(ConfigError, match="refused the credentials"):
        hyper_tune(objectives.quadratic, _space(), max_evals=2,
                   settings=settings.replace(broker_url=wrong))


def test_a_malformed_space_is_rejected_before_anything_is_queued(settings, store):
    with pytest.raises(SpaceError) as error:
        hyper_tune(objectives.quadratic, {"x": hp.choice("depth", [])}, max_evals=2,
                   name="never-created", settings=settings)
    assert error.value.label == "depth"
    assert "'depth'" in str(error.value)
    assert store.experiment_by_name("never-created") is None
