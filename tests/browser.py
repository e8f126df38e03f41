"""One headless Chromium (Debian's `chromium` + `chromium-driver`) driven by Selenium.

In CI (`.ci/run`) the browser is installed and `ZTML_TEST_BROWSER=required` is exported: then a
missing browser or driver is a failure. Elsewhere the browser tests skip and say what to install.
Selenium is pointed at the system browser and driver explicitly, so Selenium Manager never
tries to download anything.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REQUIRED_ENV = "ZTML_TEST_BROWSER"
SKIP_REASON = (
    "no headless Chromium: `apt-get install -y chromium chromium-driver` (Debian) and the dev "
    "extras (selenium); CI installs them and sets ZTML_TEST_BROWSER=required"
)
# headless, no sandbox (containers run as root), nothing phoning home, one fixed viewport
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--metrics-recording-only",
    "--no-first-run",
    "--password-store=basic",
    "--window-size=1400,1000",
)
WAIT_SECONDS = 30.0


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRED_ENV) == "required":
        pytest.fail(f"{REQUIRED_ENV}=required but {reason}; {SKIP_REASON}")
    pytest.skip(f"{reason}; {SKIP_REASON}")


def chromium(user_data: Path) -> Iterator[Any]:
    """A started `webdriver.Chrome` (closed after the `yield`), or a skip/fail saying why."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not browser or not driver_path:
        _unavailable("chromium or chromedriver is not on PATH")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, condition: Callable[[Any], Any], what: str, timeout: float = WAIT_SECONDS):
    """WebDriverWait with a message that says what did not appear. A page that re-renders
    (MLflow's re-reads the version every ~10 s) makes elements stale: the condition is retried,
    so read what you need inside it."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(
        driver,
        timeout,
        poll_frequency=0.1,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    ).until(condition, f"timed out after {timeout} s waiting for {what}")
