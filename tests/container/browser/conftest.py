"""Fixtures of the page's browser tests: Debian's chromium (Playwright, no browser download) and the real
``container/serve`` with two real tiny models (scratch, dent), started once for both test files; the page is
opened while the models still load, to see it say so."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import build_tiny_model_dir, require_tool
from tests.container.browser.driving import CHROMIUM, CHROMIUM_ARGS, DENT_THRESHOLD, new_page, wait_ready
from tests.container.conftest import MODEL_READY_TIMEOUT_S, start_server


@pytest.fixture(scope="session")
def page_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("page_models")
    build_tiny_model_dir(folder, "scratch", seed=7)
    # The dent model has its own threshold, so a lower min_score needs a new request (not a filter).
    build_tiny_model_dir(folder, "dent", seed=11, DETECTION_MIN_CONFIDENCE=DENT_THRESHOLD)
    return folder


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    executable = require_tool("chromium", CHROMIUM)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("REQUIRE_TOOLS") == "1":
            pytest.fail("playwright is not installed (REQUIRE_TOOLS=1)")
        pytest.skip("playwright is not installed")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def served(page_model_dir: Path, browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """serve started now; the page opened as soon as GET / answers, i.e. while the models still load."""
    require_tool("nginx")
    server = start_server(page_model_dir, tmp_path_factory.mktemp("page_server"))
    try:
        deadline = time.monotonic() + MODEL_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if requests.get(server.url + "/", timeout=5).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or busy importing TensorFlow
                pass
            time.sleep(0.1)
        first_page = new_page(browser, server)
        first_page.goto(server.url + "/")
        wait_ready(first_page)
        status_log = first_page.evaluate("window.__statusLog")
        first_page.context.close()
        server.wait_until(200)
        yield {"server": server, "status_log": status_log}
    finally:
        server.stop()


@pytest.fixture
def page(browser: Any, served: dict) -> Iterator[Any]:
    """A fresh page (its own browser context), ready; afterwards it must have had no CSP violation."""
    opened = new_page(browser, served["server"])
    opened.goto(served["server"].url + "/")
    wait_ready(opened)
    yield opened
    assert opened.evaluate("window.__cspViolations") == []
    opened.context.close()
