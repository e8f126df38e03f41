"""What a person sees, in a real browser: the controller's status page and the MLflow UI.

Headless Debian Chromium driven by Selenium (tests/browser.py: skips outside CI when absent,
fails in CI), a real `mlflow server` with webhooks, a real `ztml controller` process deploying
real sklearn models with the process runtime. One browser and one controller per module.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pytest
import requests
import uvicorn

from mlflow_ztml.controller.app import create_app
from tests.browser import chromium, wait
from tests.controller.conftest import registered_controller
from tests.controller.helpers import wait_for
from tests.controller.process import ControllerProcess
from tests.controller.test_status_page import HOSTILE, StatusController, sample_status
from tests.mlflow_server import MlflowServer, free_port
from tests.models import GOOD_METRICS, register_sklearn

pytestmark = pytest.mark.slow

PREFIX = f"web{uuid.uuid4().hex[:4]}"
ALIAS_MODEL, STAGE_MODEL = f"{PREFIX}-alias", f"{PREFIX}-stage"
BAD_METRICS = {**GOOD_METRICS, "accuracy": 0.5}
CONFIG = f"""
environments:
  staging: {{runtime: process}}
controller:
  aliases: {{staging: staging}}
  stages: {{Staging: staging}}
  poll_interval_seconds: 2
  models: [{ALIAS_MODEL}, {STAGE_MODEL}]
  workers: 2
  backoff_base_seconds: 0.5
  backoff_max_seconds: 3
  ready_timeout_seconds: 90
"""
DEPLOY_SECONDS = 90  # a deployment on a loaded two-core CI machine
# `deployed v1 · allow · ... · http://127.0.0.1:PORT · 2026-12-02 04:02Z` (mlflow_ztml/record.py)
DEPLOYED_V1 = re.compile(r"^deployed v1 · allow · (.* · )?http://127\.0\.0\.1:\d+ · ")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield from chromium(tmp_path_factory.mktemp("chromium"))


@pytest.fixture(scope="module")
def controller(
    browser: Any, webhook_mlflow: MlflowServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControllerProcess]:
    home = tmp_path_factory.mktemp("controller-web")
    with registered_controller(home, CONFIG, webhook_mlflow, PREFIX, log_tail=3000) as process:
        yield process


def _client(server: MlflowServer) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(server.url)


def _by(kind: str, value: str) -> tuple[str, str]:
    from selenium.webdriver.common.by import By

    return getattr(By, kind), value


def _clickable(kind: str, value: str) -> Any:
    from selenium.webdriver.support import expected_conditions as ec

    return ec.element_to_be_clickable(_by(kind, value))


def _gone(kind: str, value: str) -> Any:
    from selenium.webdriver.support import expected_conditions as ec

    return ec.invisibility_of_element_located(_by(kind, value))


def _cell(browser: Any, field: str, row: Any) -> str:
    return row.find_element(*_by("CSS_SELECTOR", f'td[data-field="{field}"]')).text


def _open_version(browser: Any, server: MlflowServer, model: str, version: str) -> None:
    """A fresh load (the tags section stays collapsed when the first load had no tags)."""
    url = f"{server.url}/#/models/{model}/versions/{version}"
    if browser.current_url == url:
        browser.refresh()  # a get() of the same URL with a fragment would not reload
    else:
        browser.get(url)
    wait(browser, _clickable("XPATH", f"//h2[normalize-space()='Version {version}']"), "page")


def _headline_shown(
    browser: Any, server: MlflowServer, model: str, version: str
) -> tuple[str, list[str]]:
    """The value of `ztml.staging` as the version page shows it (after a fresh load), and the
    tag names in the order the page lists them."""
    _open_version(browser, server, model, version)

    def read(driver: Any) -> tuple[str, list[str]] | None:
        cells = driver.find_elements(
            *_by("CSS_SELECTOR", 'tr[data-row-key="ztml.staging"] td:nth-child(2)')
        )
        rows = driver.find_elements(*_by("CSS_SELECTOR", "tr[data-row-key]"))
        names = [row.get_attribute("data-row-key") for row in rows]
        return (cells[0].text, names) if cells and cells[0].text else None

    return wait(browser, read, "the ztml.staging tag")


@dataclass
class Clicked:
    """What the clicks in the MLflow UI did, and what the version page showed before."""

    tags_before: str
    seconds: float


@pytest.fixture(scope="module")
def clicked(browser: Any, controller: ControllerProcess, webhook_mlflow: MlflowServer) -> Clicked:
    """v1 of one model gets the alias `staging` and v1 of another the stage Staging, both by
    clicking in the MLflow UI; the two deployments then run side by side (two workers)."""
    client = _client(webhook_mlflow)
    register_sklearn(webhook_mlflow.url, ALIAS_MODEL, metrics=GOOD_METRICS)
    register_sklearn(webhook_mlflow.url, STAGE_MODEL, metrics=GOOD_METRICS)
    started = time.monotonic()

    # Alias, in the default ("new model registry") UI: Aliases "Add", type, Enter, Save.
    _open_version(browser, webhook_mlflow, ALIAS_MODEL, "1")
    tags_before = browser.find_element(*_by("TAG_NAME", "body")).text
    wait(browser, _clickable("CSS_SELECTOR", "button[title='Add aliases']"), "Add aliases").click()
    box = wait(browser, _clickable("CSS_SELECTOR", "[role=dialog] input[role=combobox]"), "input")
    box.send_keys("staging\n")
    save = "//div[@role='dialog']//button[normalize-space()='Save aliases']"
    wait(browser, _clickable("XPATH", save), "Save aliases").click()
    wait(browser, _gone("CSS_SELECTOR", "[role=dialog]"), "the alias dialog to close")
    # the UI's request may land just after its dialog closes
    wait_for(
        lambda: client.get_model_version(ALIAS_MODEL, "1").aliases == ["staging"],
        10,
        "the alias in MLflow",
    )

    # Stage: only after switching "New model registry UI" off (a confirmation dialog).
    _open_version(browser, webhook_mlflow, STAGE_MODEL, "1")
    switch = "//*[normalize-space()='New model registry UI']/following::button[@role='switch']"
    wait(browser, _clickable("XPATH", switch), "the UI switch").click()
    disable = "//div[@role='dialog']//button[normalize-space()='Disable']"
    wait(browser, _clickable("XPATH", disable), "the Disable confirmation").click()
    wait(browser, _gone("CSS_SELECTOR", "[role=dialog]"), "the confirmation to close")
    wait(browser, _clickable("CSS_SELECTOR", ".mlflow-stage-transition-dropdown"), "Stage").click()
    to_staging = "//li[@role='menuitem'][contains(normalize-space(), 'Staging')]"
    wait(browser, _clickable("XPATH", to_staging), "Transition to Staging").click()
    ok = "//div[@role='dialog']//button[normalize-space()='OK']"
    wait(browser, _clickable("XPATH", ok), "the transition's OK").click()
    wait(browser, _gone("CSS_SELECTOR", "[role=dialog]"), "the transition dialog to close")
    wait_for(
        lambda: client.get_model_version(STAGE_MODEL, "1").current_stage == "Staging",
        10,
        "the stage in MLflow",
    )

    def deployed(model: str) -> bool:
        tag = client.get_model_version(model, "1").tags.get("ztml.staging", "")
        return tag.startswith("deployed")

    wait_for(lambda: deployed(ALIAS_MODEL), DEPLOY_SECONDS, "the alias-driven deployment")
    wait_for(lambda: deployed(STAGE_MODEL), DEPLOY_SECONDS, "the stage-driven one (next poll)")
    seconds = time.monotonic() - started
    print(f"clicks -> both deployed: {seconds:.1f} s")
    return Clicked(tags_before=tags_before, seconds=seconds)


def test_alias_and_stage_set_in_the_mlflow_ui_deploy(
    browser: Any, clicked: Clicked, webhook_mlflow: MlflowServer, tmp_path: Path
) -> None:
    # before: the version page says nothing about staging
    assert "ztml.staging" not in clicked.tags_before
    for model in (ALIAS_MODEL, STAGE_MODEL):
        shown, names = _headline_shown(browser, webhook_mlflow, model, "1")
        browser.save_screenshot(str(tmp_path / f"{model}-version-page.png"))
        # after: one sentence, first among the ztml tags
        assert DEPLOYED_V1.match(shown), shown
        ztml = [n for n in names if n.startswith("ztml.")]
        assert ztml[0] == "ztml.staging", names
        print(f"{model} v1 page: ztml.staging = {shown}")


def test_status_page_shows_deployments_and_rejections(
    browser: Any,
    clicked: Clicked,
    controller: ControllerProcess,
    webhook_mlflow: MlflowServer,
    tmp_path: Path,
) -> None:
    client = _client(webhook_mlflow)
    v2 = register_sklearn(webhook_mlflow.url, ALIAS_MODEL, metrics=BAD_METRICS)
    key = f"{ALIAS_MODEL}/staging"

    def report() -> dict[str, Any] | None:
        return requests.get(f"{controller.url}/status", timeout=5).json()["keys"].get(key)

    client.set_registered_model_alias(ALIAS_MODEL, "staging", v2)
    wait_for(lambda: (report() or {}).get("outcome") == "rejected", DEPLOY_SECONDS, "v2 rejected")

    started = time.monotonic()
    browser.get(f"{controller.url}/")
    section = wait(
        browser, _clickable("CSS_SELECTOR", 'section[data-environment="staging"]'), "staging"
    )
    rows = {
        _cell(browser, "model", r): r
        for r in section.find_elements(*_by("CSS_SELECTOR", "tbody tr"))
    }
    screenshot = tmp_path / "status-page.png"
    browser.save_screenshot(str(screenshot))
    print(f"status page loaded and read in {time.monotonic() - started:.2f} s: {screenshot}")
    assert screenshot.stat().st_size > 10_000

    # the alias row: rejected v2, v1 still serving at its endpoint, since when
    row = rows[ALIAS_MODEL]
    assert _cell(browser, "status", row) == f"rejected v{v2}"
    assert _cell(browser, "version", row) == "v1"
    endpoint = _cell(browser, "endpoint", row)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", endpoint), endpoint
    assert requests.get(f"{endpoint}/health", timeout=5).status_code < 500
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", _cell(browser, "since", row))
    assert _cell(browser, "desired", row) == f"v{v2} (alias staging)"
    # the model links to its version page in MLflow, without credentials
    link = row.find_element(*_by("CSS_SELECTOR", 'td[data-field="model"] a'))
    assert (
        link.get_attribute("href") == f"{webhook_mlflow.url}/#/models/{ALIAS_MODEL}/versions/{v2}"
    )
    # the stage row: deployed by the poll
    stage = rows[STAGE_MODEL]
    assert _cell(browser, "status", stage) == "deployed"
    assert _cell(browser, "desired", stage) == "v1 (stage Staging)"

    # the last decisions, newest first: v2 denied with its reasons, v1 allowed
    decisions = browser.find_elements(*_by("CSS_SELECTOR", "#decisions tbody tr"))
    mine = [d for d in decisions if _cell(browser, "model", d) == ALIAS_MODEL]
    assert [(_cell(browser, "version", d), _cell(browser, "decision", d)) for d in mine] == [
        (f"v{v2}", "deny"),
        ("v1", "allow"),
    ]
    reasons = _cell(browser, "reasons", mine[0])
    assert "accuracy 0.5000 is below the minimum 0.8500" in reasons, reasons
    audit = mine[0].find_element(*_by("CSS_SELECTOR", 'td[data-field="audit"] a'))
    assert audit.get_attribute("href").startswith(f"{webhook_mlflow.url}/#/experiments/")
    assert browser.find_elements(*_by("TAG_NAME", "script")) == []


def test_hostile_names_and_reasons_show_as_text(browser: Any) -> None:
    """A stand-in controller (helpers.py) with names MLflow itself would refuse, served by the
    real app and uvicorn: Chromium shows them as text and runs nothing."""
    from selenium.common.exceptions import NoAlertPresentException

    port = free_port()
    app = create_app(StatusController(sample_status()), manage_lifecycle=False)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 15, "uvicorn")
        browser.get(f"http://127.0.0.1:{port}/")
        row = wait(browser, _clickable("CSS_SELECTOR", "#decisions tbody tr"), "a decision row")
        assert _cell(browser, "model", row) == HOSTILE
        assert "onerror=" in _cell(browser, "reasons", row)  # shown, not parsed
        with pytest.raises(NoAlertPresentException):
            _ = browser.switch_to.alert.text
        assert browser.find_elements(*_by("TAG_NAME", "script")) == []
        assert browser.find_elements(*_by("TAG_NAME", "img")) == []
    finally:
        server.should_exit = True
        thread.join(10)
