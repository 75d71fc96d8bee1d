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


@pytest.mark.parametrize("url", ["mongodb://127.0.0.1:9/",
                                 "mongodb://u:p@10.255.255.1:27017/"])
def test_unreachable_mongodb_is_a_config_error_within_10_s(settings, url):
    started = time.monotonic()
    with pytest.raises(ConfigError) as error:
        hyper_tune(objectives.quadratic, _space(), max_evals=2,
                   settings=settings.replace(mongo_url=url))
    assert time.monotonic() - started < 10
    assert "cannot reach MongoDB" in str(error.value)
    assert url.split("@")[-1].split("//")[-1].rstrip("/") in str(error.value)


def _without_credentials(url: str) -> str:
    scheme, rest = url.split("://")
    return f"{scheme}://{rest.split('@', 1)[1]}"


def test_mongodb_without_or_with_wrong_credentials_is_a_config_error(settings, store):
    name = "never-written"
    anonymous = settings.replace(mongo_url=_without_credentials(settings.mongo_url))
    started = time.monotonic()
    with pytest.raises(ConfigError, match="requires authentication"):
        hyper_tune(objectives.quadratic, _space(), max_evals=2, name=name, settings=anonymous)
    assert time.monotonic() - started < 10
    wrong = settings.replace(mongo_url=settings.mongo_url.replace("tuner:", "tuner:x", 1))
    with pytest.raises(ConfigError, match="rejected the credentials") as error:
        hyper_tune(objectives.quadratic, _space(), max_evals=2, name=name, settings=wrong)
    assert "tuner:***@" in str(error.value)
    assert store.experiment_by_name(name) is None  # nothing was written


def test_a_remote_mongodb_url_without_credentials_is_refused_unless_allowed(settings):
    remote = settings.replace(mongo_url="mongodb://db.example.internal:27017/")
    with pytest.raises(ConfigError, match="has no credentials"):
        hyper_tune(objectives.quadratic, _space(), max_evals=2, settings=remote)
    allowed = remote.replace(allow_unauthenticated_mongo=True, mongo_url="mongodb://10.255.255.1/")
    with pytest.raises(ConfigError, match="cannot reach MongoDB"):
        hyper_tune(objectives.quadratic, _space(), max_evals=2, settings=allowed)


@pytest.mark.parametrize("url", ["redis://:pw@127.0.0.1:9/0", "redis://:pw@10.255.255.1:6379/0"])
def test_unreachable_broker_is_a_config_error_within_10_s(settings, url):
    started = time.monotonic()
    with pytest.raises(ConfigError) as error:
        hyper_tune(objectives.quadratic, _space(), max_evals=2,
                   settings=settings.replace(broker_url=url))
    assert time.monotonic() - started < 10
    assert "cannot reach the broker" in str(error.value)
    assert ":pw@" not in str(error.value)  # the password is never printed


def test_a_broker_without_or_with_a_wrong_password_is_a_config_error(settings, store):
    host = settings.broker_url.split("@", 1)[1]
    for url in (f"redis://{host}", settings.broker_url.replace("redis://:", "redis://:wrong")):
        started = time.monotonic()
        with pytest.raises(ConfigError, match="refused the credentials"):
            hyper_tune(objectives.quadratic, _space(), max_evals=2, name="never-written",
                       settings=settings.replace(broker_url=url))
        assert time.monotonic() - started < 10
    assert store.experiment_by_name("never-written") is None


def test_a_malformed_space_is_rejected_before_anything_is_queued(settings, store):
    with pytest.raises(SpaceError) as error:
        hyper_tune(objectives.quadratic, {"x": hp.choice("depth", [])}, max_evals=2,
                   name="never-created", settings=settings)
    assert error.value.label == "depth"
    assert "'depth'" in str(error.value)
    assert store.experiment_by_name("never-created") is None
