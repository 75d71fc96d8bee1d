"""``python -m tuner flower``: authentication is required, the HTTP API lists the
cluster's workers and each trial's task with its outcome and log tail, and the worker
page renders in headless Chromium (screenshots in ``test-artifacts/flower/``)."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import objectives
import pytest
from hyperopt import hp, rand

from broker.errors import ConfigError
from broker.settings import Secret, Settings
from sdk import hyper_tune
from tests.helpers import REPO, unique, wait_for
from tests.testbed.cluster import module_cluster
from tuner.flower import FlowerOptions, flower_argv

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = REPO / "test-artifacts" / "flower"
USER, PASSWORD = "flower-admin", "s3cret-Flower-pw"
SEEN: dict = {}


def test_flower_refuses_to_start_without_credentials_unless_told():
    with pytest.raises(ConfigError, match="TUNER_FLOWER_USER"):
        flower_argv(FlowerOptions())
    with pytest.raises(ConfigError, match="both"):
        flower_argv(FlowerOptions(user="admin"))
    argv = flower_argv(FlowerOptions(user="admin", password=Secret("pw")))
    assert "--basic_auth=admin:pw" in argv and "--address=127.0.0.1" in argv
    assert not [a for a in flower_argv(FlowerOptions(allow_unauthenticated=True))
                if "basic_auth" in a]
    settings = Settings.from_env({"TUNER_FLOWER_USER": "u", "TUNER_FLOWER_PASSWORD": "p"})
    assert (settings.flower_user, settings.flower_password) == ("u", Secret("p"))
    assert "TUNER_FLOWER_PASSWORD" not in settings.to_env()  # workers never get it
    done = subprocess.run([sys.executable, "-m", "tuner", "flower"], cwd=REPO,
                          env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert done.returncode == 2 and "Flower needs credentials" in done.stderr


@pytest.fixture(scope="module")
def cluster(request):
    return module_cluster(request)


@pytest.fixture(scope="module")
def flower(cluster):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(cluster.testbed.root / "flower.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "tuner", "flower", "--port", str(port)],
        cwd=cluster.testbed.root, stdout=log, stderr=subprocess.STDOUT,
        env=cluster.env(TUNER_FLOWER_USER=USER, TUNER_FLOWER_PASSWORD=PASSWORD))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _status(url + "/healthcheck") == 200, timeout=60,
                 message="Flower to answer")
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_text()
        assert PASSWORD not in cmdline and not [s for s in cluster.secrets if s in cmdline]
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()
    printed = (cluster.testbed.root / "flower.log").read_text()
    assert "Visit me at" in printed or "Broker" in printed, printed
    assert PASSWORD not in printed and not [s for s in cluster.secrets if s in printed]


def _status(url: str, auth: bool = False) -> int | None:
    try:
        return _get(url, auth=auth).status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _get(url: str, *, auth: bool = True):
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    return urllib.request.urlopen(request, timeout=30)


def _json(url: str):
    with _get(url) as response:
        return json.loads(response.read())


@pytest.mark.testbed
def test_flower_lists_workers_and_trial_tasks_with_their_outcome(cluster, flower):
    assert _status(flower + "/api/workers") == 401
    assert _status(flower + "/api/tasks") == 401
    assert _status(flower + "/workers") == 401
    expected = {f"gpu{g}@{h}" for h in cluster.names for g in (0, 1)}
    workers = wait_for(lambda: (w := _json(flower + "/api/workers?refresh=1")) and
                       expected <= set(w) and w, timeout=60, message="workers in Flower")
    assert workers[f"gpu0@{cluster.names[0]}"]["stats"]["pool"]["max-concurrency"] == 1

    name = unique("flower")
    result = hyper_tune(objectives.cluster_trial, {"x": hp.uniform("x", -2, 2), "sleep": 0.2},
                        algo=rand.suggest, max_evals=4, name=name, settings=cluster.settings,
                        rstate=np.random.default_rng(2))
    exp_id = result["experiment_id"]

    def finished_tasks():
        tasks = _json(flower + "/api/tasks?state=SUCCESS&limit=1000").values()
        return [t for t in tasks if exp_id in (t.get("args") or "")]

    tasks = wait_for(lambda: len(finished_tasks()) == 4 and finished_tasks(), timeout=60,
                     message="the trial tasks in Flower")
    docs = {d["tid"]: d for d in cluster.store.find_trials(exp_id)}
    for task in tasks:
        assert task["name"] == "workers.evaluate_trial"
        tid = int(task["args"].strip("[]()").split(",")[1])
        doc = docs[tid]
        assert task["worker"] == doc["worker"]
        for shown in (f"'tid': {tid}", f"'host': '{doc['host']}'", f"'gpu': '{doc['gpu']}'",
                      f"'loss': {doc['result']['loss']!r}", "'state': 'ok'",
                      f"'x': {doc['params']['x']!r}", "cluster trial done"):
            assert shown in task["result"], (shown, task["result"])
    SEEN["task"] = tasks[0]  # for the screenshot test below


@pytest.mark.testbed
@pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                    reason="needs Debian's chromium and chromium-driver")
def test_flower_pages_in_headless_chromium(cluster, flower):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1400,900", "--hide-scrollbars"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        driver.set_page_load_timeout(60)
        driver.execute_cdp_cmd("Network.enable", {})
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        driver.execute_cdp_cmd("Network.setExtraHTTPHeaders",
                               {"headers": {"Authorization": f"Basic {token}"}})
        worker = f"gpu0@{cluster.names[0]}"
        driver.get(f"{flower}/workers")
        wait_for(lambda: worker in driver.page_source, timeout=30, message="worker list")
        driver.save_screenshot(str(ARTIFACTS / "workers.png"))
        driver.get(f"{flower}/worker/{worker}")
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "table"), timeout=30,
                 message="the worker page")
        assert worker in driver.page_source
        driver.save_screenshot(str(ARTIFACTS / "worker.png"))
        task = SEEN.get("task")
        if task is not None:
            driver.get(f"{flower}/task/{task['uuid']}")
            wait_for(lambda: "cluster trial done" in driver.page_source, timeout=30,
                     message="the task page with the trial's log tail")
            driver.save_screenshot(str(ARTIFACTS / "task.png"))
    finally:
        driver.quit()
    assert (ARTIFACTS / "worker.png").stat().st_size > 10_000
