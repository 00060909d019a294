"""The demo page in a real browser (Debian's chromium driven by Playwright)."""

from __future__ import annotations

import os
import shutil

import pytest

from helpers import live_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

if not os.path.exists(CHROMIUM):
    # CI installs chromium (.ci/run); only a developer machine without it may skip.
    if os.environ.get("CI"):
        raise RuntimeError("chromium is missing: .ci/run must install it (apt-get install chromium)")
    pytest.skip("chromium not installed (apt-get install chromium)", allow_module_level=True)


launch_args = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def server(answerer):
    from loraqa.serving.app import create_app

    with live_server(create_app(answerer)) as url:
        yield url


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=launch_args)
        pg = browser.new_page()
        yield pg
        browser.close()


def test_asking_shows_the_answer_highlighted_in_the_passage(page, server, two_adapters):
    row = two_adapters["rows"][0]
    page.goto(server + "/")
    page.wait_for_selector("input[name=adapter]")
    page.fill("#passage", row["context"])
    page.fill("#question", row["question"])
    page.click("#ask")
    result = page.wait_for_selector(".result[data-adapter=answers]")
    assert result.query_selector(".answer").inner_text() == row["answers"]["text"][0]
    assert result.query_selector("mark").inner_text() == row["answers"]["text"][0]


def test_adapters_compared_side_by_side(page, server, two_adapters):
    row = two_adapters["rows"][1]
    page.goto(server + "/")
    page.wait_for_selector("input[name=adapter][value=titles]")
    page.check("input[name=adapter][value=titles]")
    page.fill("#passage", row["context"])
    page.fill("#question", row["question"])
    page.click("#ask")
    page.wait_for_selector(".result[data-adapter=titles]")
    answers = {
        el.get_attribute("data-adapter"): el.query_selector(".answer").inner_text()
        for el in page.query_selector_all(".result")
    }
    assert answers == {"answers": row["answers"]["text"][0], "titles": row["title"]}


def test_an_empty_passage_searches_the_collection_and_shows_where_the_answer_was_read(asker, two_adapters, page):
    from loraqa.serving.app import create_app

    row = two_adapters["rows"][2]
    with live_server(create_app(asker)) as url:
        page.goto(url + "/")
        page.wait_for_selector("input[name=adapter][value=answers]")
        page.fill("#question", row["question"])
        page.click("#ask")
        result = page.wait_for_selector(".result[data-adapter=answers]")
        assert result.query_selector(".answer").inner_text() == row["answers"]["text"][0]
        cited = result.query_selector(".citation")
        assert (
            row["title"] in cited.inner_text()
            and cited.query_selector("mark").inner_text() == row["answers"]["text"][0]
        )
