"""The page in a real browser: Debian's Chromium, headless, driven by Playwright's Python package (no browser
download). Typing a history shows the API's recommendations; picking a known user shows theirs."""

import shutil

import numpy as np
import pandas as pd
import pytest

from seqrec.cli import main

from conftest import cyclic_frame
from service_helpers import LiveServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")


@pytest.fixture(scope="module")
def page_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("page")
    data, items = root / "log.csv", root / "items.csv"
    cyclic_frame(n_users=60, n_items=30).to_csv(data, index=False)
    pd.DataFrame({"item_id": np.arange(1, 31), "title": [f"Song {i}" for i in range(1, 31)]}).to_csv(items, index=False)
    assert main(["train", "--data", str(data), "--model", "sasrec", "--out", str(root / "run"), "--max-len", "8",
                 "--dim", "16", "--epochs", "2", "--no-progress"]) == 0
    with LiveServer(root / "run", "--items", str(items), state=root / "events.sqlite") as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


def _shown(page) -> list[str]:
    return page.eval_on_selector_all("#results tbody tr", "rows => rows.map(r => r.dataset.item)")


def test_typing_a_history_shows_the_apis_recommendations(page_server, browser, tmp_path):
    page = browser.new_page()
    page.goto(page_server.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    assert "sasrec" in page.inner_text("#model-id")
    page.click("#tab-history")
    page.fill("#history-input", "3, 4, 5")
    page.fill("#k", "7")
    page.click("#recommend")
    page.wait_for_selector("#results tbody tr")
    api = page_server.client.post("/v1/recommend", json={"history": ["3", "4", "5"], "k": 7}).json()
    assert _shown(page) == [str(i) for i in api["items"]]
    titles = page.eval_on_selector_all("#results tbody td.meta", "cells => cells.map(c => c.textContent)")
    assert titles == [f"Song {i}" for i in api["items"]]
    assert page.eval_on_selector_all("#history tbody tr", "rows => rows.map(r => r.dataset.item)") == ["3", "4", "5"]
    page.screenshot(path=str(tmp_path / "history.png"), full_page=True)
    assert (tmp_path / "history.png").stat().st_size > 0
    # item search adds to the history
    page.fill("#item-search", "Song 12")
    page.wait_for_selector("#item-hits li button")
    page.click("#item-hits li button")
    assert page.input_value("#history-input").endswith(", 12")
    page.close()


def test_a_known_user_and_the_model_card(page_server, browser, tmp_path):
    page = browser.new_page()
    page.goto(page_server.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.fill("#user-input", "5")
    page.click("#user-go")
    page.wait_for_selector("#results tbody tr")
    api = page_server.client.get("/v1/users/5/recommendations", params={"k": 10}).json()
    assert _shown(page) == [str(i) for i in api["items"]]
    history = page_server.client.get("/v1/users/5").json()["history"]
    assert page.eval_on_selector_all("#history tbody tr", "rows => rows.map(r => r.dataset.item)") == [str(i) for i in history]
    page.click("#card-toggle")
    assert page.is_visible("#card") and "sasrec" in page.inner_text("#card-summary")
    page.fill("#user-input", "nobody")
    page.click("#user-go")
    page.wait_for_selector("#status.error")
    assert "unknown user" in page.inner_text("#status")
    page.screenshot(path=str(tmp_path / "user.png"), full_page=True)
    page.close()
