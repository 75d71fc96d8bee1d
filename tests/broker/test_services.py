"""The local default services: started, protected, persistent, stopped."""

from __future__ import annotations

import stat

import pymongo
import pytest
import redis

from broker.errors import ConfigError
from broker.services import LocalServices, resolve
from broker.settings import Settings


def test_up_status_down_and_data_survives_a_restart(tmp_path):
    services = LocalServices(tmp_path)
    try:
        connection, started = services.up()
        assert started == ["redis", "mongo"]
        assert services.up()[1] == []  # idempotent
        assert all(s.running and s.address.startswith("127.0.0.1:") for s in services.status())
        pymongo.MongoClient(connection.mongo_url).t.c.insert_one({"k": "kept"})
        redis.Redis.from_url(connection.broker_url).set("k", "kept")

        assert services.down() == ["redis", "mongo"]
        assert not any(s.running for s in services.status())
        again, _ = services.up()
        assert again.secret == connection.secret  # specs signed earlier still verify
        assert pymongo.MongoClient(again.mongo_url).t.c.find_one({"k": "kept"})
        assert redis.Redis.from_url(again.broker_url).get("k") == b"kept"
    finally:
        services.down()


def test_redis_requires_its_password_and_secrets_are_private(tmp_path):
    state = tmp_path / "state"
    services = LocalServices(state)
    try:
        connection, _ = services.up()
        port = int(connection.broker_url.rsplit(":", 1)[1].split("/")[0])
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=port).ping()
        mongo_port = int(connection.mongo_url.rsplit(":", 1)[1].split("/")[0])
        anonymous = pymongo.MongoClient(f"mongodb://127.0.0.1:{mongo_port}/")
        with pytest.raises(pymongo.errors.OperationFailure, match="requires authentication"):
            anonymous.t.c.insert_one({"planted": True})
        anonymous.close()
        for name in ("secrets.json", "services.json", "redis/redis.conf"):
            assert stat.S_IMODE((state / name).stat().st_mode) == 0o600
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
    finally:
        services.down()


def test_resolve_without_running_services_explains_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="services up"):
        resolve(Settings(state_dir=tmp_path), start=False)
    configured = Settings(broker_url="redis://h/0", mongo_url="mongodb://h/")
    assert resolve(configured, start=True) == (configured, [])
