"""The dashboard in headless Chromium (Selenium, Debian's ``chromium`` and
``chromium-driver``): the experiments list, an experiment while it runs (its trial count
grows), a trial's detail, the comparison view. Any JavaScript console error fails the
test. Screenshots go to ``test-artifacts/dashboard/``.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, unique, wait_for
from tests.tuner.test_dashboard_http import run_small_experiment
from tests.tuner.test_dashboard_scale import seed_experiment
from tuner.dashboard import DashboardServer

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.select import Select  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = REPO / "test-artifacts" / "dashboard"

pytestmark = [
    pytest.mark.usefixtures("workers"),
    pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                       reason="needs Debian's chromium and chromium-driver"),
]

LIVE_TRIALS = 40
LIVE_SLEEP_S = 0.5


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--hide-scrollbars",
                # WebGL (Plotly's parallel coordinates) on the CPU
                "--use-angle=swiftshader", "--enable-unsafe-swiftshader"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def server(store) -> Iterator[DashboardServer]:
    with DashboardServer(store, port=0).start() as server:
        yield server


def console_errors(driver: Any) -> list[str]:
    """JavaScript errors since the last call: console SEVEREs and uncaught exceptions."""
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    errors += driver.execute_script("return (window.__dashboard || {errors: []}).errors") or []
    return errors


def screenshot(driver: Any, name: str, *, height: int | None = None) -> Path:
    """Save the whole page (``height`` cuts it) as ``test-artifacts/dashboard/NAME.png``."""
    full = height or driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, max(600, min(int(full), 4000)))
    time.sleep(0.8)  # let Plotly re-layout to the new size
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1000)
    return path


def open_page(driver: Any, server: DashboardServer, route: str) -> None:
    driver.get(f"{server.url}#{route}")
    wait_for(lambda: driver.execute_script("return Number(document.body.dataset.ticks) > 0"),
             timeout=30, message=f"{route} to load")


def finished_count(driver: Any) -> int:
    value = driver.execute_script(
        "const h = document.getElementById('experiment-head');"
        "return h && h.dataset.finished !== undefined ? Number(h.dataset.finished) : -1")
    return int(value)


def test_list_live_experiment_detail_and_comparison(browser, server, settings, store):
    done = run_small_experiment(settings, n=12, seed=5, name=unique("baseline"))
    live_name = unique("live")
    outcome: dict[str, Any] = {}

    def tune() -> None:
        try:
            outcome["result"] = run_small_experiment(settings, n=LIVE_TRIALS, seed=8,
                                                     name=live_name, sleep=LIVE_SLEEP_S)
        except BaseException as exc:  # reported by the main thread
            outcome["error"] = exc

    thread = threading.Thread(target=tune, daemon=True)
    thread.start()
    try:
        # the experiments list shows the running experiment
        open_page(browser, server, "/")
        exp_id, text = wait_for(lambda: _row(browser, live_name), timeout=60,
                                message="the running experiment in the list")
        assert "running" in text
        assert console_errors(browser) == []

        # its page, while it runs: the number of finished trials grows
        open_page(browser, server, f"/experiment/{exp_id}")
        wait_for(lambda: browser.execute_script("return document.body.dataset.loaded"),
                 timeout=30, message="the experiment page")
        first = finished_count(browser)
        assert 0 <= first < LIVE_TRIALS, "the experiment finished before the page loaded"
        wait_for(lambda: finished_count(browser) > first, timeout=60,
                 message="the trial count to grow")
        screenshot(browser, "experiment-running")
        assert console_errors(browser) == []
    finally:
        thread.join(120)
    assert "error" not in outcome, outcome.get("error")

    wait_for(lambda: finished_count(browser) == LIVE_TRIALS, timeout=30,
             message="the page to show every trial")
    wait_for(lambda: "finished" in browser.find_element(By.ID, "experiment-head").text,
             timeout=30, message="the finished state")
    # every chart drew: one small multiple per hyperparameter, log axis for lr
    params = browser.find_elements(By.CSS_SELECTOR, "#chart-params .chart")
    assert sorted(p.get_attribute("data-label") for p in params) == [
        "lr", "momentum", "opt", "x"]
    lr = next(p for p in params if p.get_attribute("data-label") == "lr")
    assert lr.get_attribute("data-log") == "true"
    assert browser.find_element(By.ID, "chart-importance").get_attribute("data-labels")
    assert browser.find_element(By.ID, "chart-lanes").get_attribute("data-lanes") != "0"
    assert int(browser.find_element(By.ID, "chart-parcoords").get_attribute("data-points")) > 0
    screenshot(browser, "experiment")

    # the trials table: filter by state, open a trial's detail
    rows = browser.find_elements(By.CSS_SELECTOR, "#trials tbody tr")
    assert len(rows) == 25
    Select(browser.find_element(By.ID, "state-filter")).select_by_value("fail")
    wait_for(lambda: _texts(browser, "#trials tbody tr") and all(
        "fail" in t for t in _texts(browser, "#trials tbody tr")),
        timeout=10, message="the table to show failed trials only")
    browser.find_elements(By.CSS_SELECTOR, "#trials tbody tr")[0].click()
    wait_for(lambda: "diverged" in browser.find_element(By.ID, "detail-body").text,
             timeout=10, message="the trial detail")
    assert "training" in browser.find_element(By.ID, "log-tail").text
    detail = browser.find_element(By.ID, "detail-body").text.splitlines()
    assert "null" not in detail and "undefined" not in detail
    screenshot(browser, "trial-detail", height=1000)
    assert console_errors(browser) == []

    # the comparison: one best-so-far chart, one table, a row per experiment
    open_page(browser, server, f"/compare/{exp_id},{done['experiment_id']}")
    wait_for(lambda: browser.find_element(By.ID, "chart-compare").get_attribute(
        "data-traces") == "2", timeout=30, message="two curves")
    table = _texts(browser, "#compare-table tbody tr")
    assert [t.split()[0] for t in table] == [live_name, done["experiment"]]
    screenshot(browser, "compare")
    assert console_errors(browser) == []

    open_page(browser, server, "/")
    wait_for(lambda: _row(browser, live_name), timeout=30, message="the list")
    screenshot(browser, "experiments")
    assert console_errors(browser) == []


def test_names_and_values_from_the_database_are_shown_as_text(browser, server, store):
    name = f'<img src=x onerror="window.__injected=1">{unique("x")}'
    experiment = seed_experiment(store, 30, name=name, seed=2)
    open_page(browser, server, "/")
    wait_for(lambda: _row(browser, name), timeout=30, message="the experiment")
    open_page(browser, server, f"/experiment/{experiment['_id']}")
    wait_for(lambda: browser.execute_script("return document.body.dataset.loaded"),
             timeout=30, message="the experiment page")
    assert name in browser.find_element(By.TAG_NAME, "h1").text
    assert browser.execute_script("return window.__injected") is None
    assert console_errors(browser) == []


def _row(driver: Any, name: str) -> tuple[str, str] | None:
    """``(experiment id, row text)`` of the list's row for ``name`` (rows are redrawn
    every few seconds, so a row read as it is replaced counts as not there yet)."""
    try:
        for row in driver.find_elements(By.CSS_SELECTOR, "#experiments tbody tr"):
            if name in row.text:
                return row.get_attribute("data-id"), row.text
    except StaleElementReferenceException:
        pass
    return None


def _texts(driver: Any, selector: str) -> list[str]:
    try:
        return [e.text for e in driver.find_elements(By.CSS_SELECTOR, selector)]
    except StaleElementReferenceException:
        return []
