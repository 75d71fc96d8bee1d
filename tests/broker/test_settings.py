from __future__ import annotations

from pathlib import Path

import pytest

from broker.errors import ConfigError
from broker.settings import Secret, Settings, redact


def test_environment_and_overrides():
    env = {"TUNER_BROKER_URL": "redis://:pw@h:1/0", "TUNER_MONGO_URL": "mongodb://m:2/",
           "TUNER_SECRET": "s3", "TUNER_MAX_EVALS": "40", "TUNER_LEASE_S": "9.5",
           "TUNER_PROGRESS": "off", "TUNER_HOME": "/tmp/x"}
    settings = Settings.from_env(env, machine_type="a100", max_evals=None)
    assert settings.broker_url == "redis://:pw@h:1/0"
    assert settings.max_evals == 40 and settings.lease_s == 9.5
    assert settings.progress is False and settings.state_dir == Path("/tmp/x")
    assert settings.queue == "trials.a100"
    assert settings.secret == Secret("s3")


def test_gradient_variables_are_accepted():
    settings = Settings.from_env({"MONGO_DB_HOST": "db", "MONGO_DB_PORT": "27018",
                                  "EXPERIMENT_NAME": "exp", "TUNER_BROKER_URL": "redis://b/0"})
    assert settings.mongo_url == "mongodb://db:27018"
    assert settings.experiment == "exp"
    env = settings.to_env()
    assert (env["MONGO_DB_HOST"], env["MONGO_DB_PORT"], env["EXPERIMENT_NAME"]) == (
        "db", "27018", "exp")


def test_half_a_configuration_is_an_error():
    with pytest.raises(ConfigError, match="TUNER_MONGO_URL is not set"):
        Settings.from_env({"TUNER_BROKER_URL": "redis://b/0"})
    with pytest.raises(ConfigError, match="TUNER_LEASE_S|lease"):
        Settings.from_env({}, heartbeat_s=5, lease_s=2)
    with pytest.raises(ConfigError, match="TUNER_MAX_EVALS"):
        Settings.from_env({"TUNER_MAX_EVALS": "many"})


def test_to_env_round_trips():
    settings = Settings.from_env({}, broker_url="redis://:p@h/0", mongo_url="mongodb://h:1/",
                                 secret="x", parallelism=3, progress=False)
    again = Settings.from_env(settings.to_env())
    assert again.replace(workspace=settings.workspace) == settings


def test_secrets_never_print():
    settings = Settings.from_env({}, secret="topsecret", broker_url="redis://:pw@h:1/0",
                                 mongo_url="mongodb://u:dbpw@h:2/")
    assert "topsecret" not in repr(settings) and "topsecret" not in str(settings.secret)
    assert redact(settings.broker_url) == "redis://:***@h:1/0"
    assert redact(settings.mongo_url) == "mongodb://u:***@h:2/"
    assert redact("mongodb://h1:1,h2:2/db") == "mongodb://h1:1,h2:2/db"


def test_require_secret():
    with pytest.raises(ConfigError, match="TUNER_SECRET"):
        Settings().require_secret()



def test_the_readme_configuration_table_lists_every_variable():
    from broker.settings import ENV

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = readme[readme.index("## Configuration"):readme.index("## How a trial flows")]
    assert [var for var in ENV.values() if f"`{var}`" not in table] == []
