"""The analysts' web page, driven in headless Chromium (Debian's package) against a real server process.

Playwright for Python drives ``/usr/bin/chromium``; it never downloads a browser (``make test`` installs
Debian's ``chromium`` when it is missing). Screenshots of the result view go to ``test-output/``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from app.utils.sample_data import make_normal_transactions
from tests.api.support import ApiServer, csv_bytes, register

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
OUTPUT_DIR = Path(__file__).resolve().parents[3] / "test-output"
PASSWORD = "a-long-password"  # the one tests.api.support.register uses
PLANTED_ROW = 7
PLANTED_COLUMN = "value5"
ANALYSIS_TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless."""
    if not CHROMIUM.exists():
        pytest.fail("/usr/bin/chromium is missing: `make test` installs it (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context (own sessionStorage) at desktop width; fails on script errors and CSP refusals."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("console", lambda message: problems.append(message.text) if "Content Security" in message.text else None)
    yield page
    context.close()
    assert not problems, problems


@pytest.fixture(scope="module")
def planted_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 normal rows, one of them with a value far outside its column's range."""
    frame = make_normal_transactions(300, seed=41)
    frame.loc[PLANTED_ROW, PLANTED_COLUMN] = frame[PLANTED_COLUMN].mean() + 40 * frame[PLANTED_COLUMN].std()
    path = tmp_path_factory.mktemp("web") / "transactions.csv"
    path.write_bytes(csv_bytes(frame))
    return path


def _sign_in(page: Page, api: ApiServer, username: str, *, create: bool = False) -> None:
    page.goto(api.url)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account" if create else "Sign in").click()
    expect(page.locator("#account-name")).to_have_text(username)


def _upload_and_analyse(page: Page, path: Path) -> None:
    page.locator("#file-input").set_input_files(path)
    expect(page.locator("#upload-message")).to_contain_text(f"Uploaded {path.name}: 300 rows")
    expect(page.locator("#result-title")).to_have_text(path.name)
    page.get_by_role("button", name="Analyse", exact=True).click()
    expect(page.locator("#result-body")).to_be_visible(timeout=ANALYSIS_TIMEOUT_MS)


def _anomaly_count(page: Page) -> int:
    return int(page.locator("#anomaly-count").inner_text().replace(",", ""))


def test_an_analyst_finds_the_planted_anomaly_downloads_and_tunes_the_sensitivity(
    api: ApiServer, page: Page, planted_csv: Path
) -> None:
    _sign_in(page, api, f"analyst-{uuid.uuid4().hex[:8]}", create=True)
    _upload_and_analyse(page, planted_csv)
    expect(page.locator("#datasets li").first.locator(".badge")).to_have_text("analyzed")

    count = _anomaly_count(page)
    assert count >= 1
    expect(page.locator("#anomaly-rate")).to_have_text(re.compile(r"^\d+(\.\d)?%$"))
    expect(page.locator("#model-name")).to_contain_text("AutoEncoder")
    expect(page.locator("#threshold")).to_contain_text("95th percentile")

    bars = page.locator("#histogram svg rect.bar")
    expect(page.locator("#histogram svg line.threshold")).to_have_count(1)
    assert bars.count() >= 3
    assert page.locator("#histogram svg rect.bar.anomalous").count() >= 1
    expect(page.locator("#histogram svg desc")).to_contain_text("300 rows")

    first_row = page.locator("#anomalies-table tbody tr").first
    expect(first_row.locator("td").nth(1)).to_have_text(str(PLANTED_ROW + 1))
    column_index = 4 + list(pd.read_csv(planted_csv, nrows=0).columns).index(PLANTED_COLUMN)
    expect(first_row.locator("td").nth(column_index)).to_have_class(re.compile(r"\bhot hot-1\b"))
    expect(first_row.locator("td.why")).to_contain_text(PLANTED_COLUMN)
    expect(page.locator("#page-label")).to_contain_text(f"of {count}")
    first_row.locator("td").nth(column_index).scroll_into_view_if_needed()
    OUTPUT_DIR.mkdir(exist_ok=True)
    page.screenshot(path=OUTPUT_DIR / "web-result-1280.png", full_page=True)

    with page.expect_download() as csv_download:
        page.get_by_role("button", name="Download CSV").click()
    assert csv_download.value.suggested_filename == "transactions_results.csv"
    results = pd.read_csv(csv_download.value.path())
    assert len(results) == 300
    assert int(results["is_anomaly"].sum()) == count
    assert bool(results.loc[PLANTED_ROW, "is_anomaly"]) is True
    with page.expect_download() as xlsx_download:
        page.get_by_role("button", name="Download XLSX").click()
    assert xlsx_download.value.suggested_filename == "transactions_results.xlsx"
    assert len(pd.read_excel(xlsx_download.value.path(), engine="calamine")) == 300

    page.get_by_label("Sensitivity: threshold percentile").fill("80")
    page.get_by_role("button", name="Re-analyse").click()
    expect(page.locator("#count-change")).to_contain_text(f"was {count} at the 95th", timeout=ANALYSIS_TIMEOUT_MS)
    expect(page.locator("#threshold")).to_contain_text("80th percentile")
    assert _anomaly_count(page) > count
    page.screenshot(path=OUTPUT_DIR / "web-result-sensitivity-1280.png", full_page=True)


def test_the_result_view_fits_a_390_px_screen(api: ApiServer, browser: Browser, planted_csv: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        _sign_in(page, api, register(api, "phone").username)
        _upload_and_analyse(page, planted_csv)
        page.locator("#result-view").scroll_into_view_if_needed()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        histogram = page.locator("#histogram svg").bounding_box()
        assert histogram is not None and histogram["width"] <= 390
        OUTPUT_DIR.mkdir(exist_ok=True)
        page.screenshot(path=OUTPUT_DIR / "web-result-390.png", full_page=True)
    finally:
        context.close()


def test_a_refused_upload_shows_the_servers_detail(api: ApiServer, page: Page, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a table\n")
    _sign_in(page, api, register(api, "refused").username)
    page.locator("#file-input").set_input_files(notes)
    message = page.locator("#upload-message")
    expect(message).to_contain_text("notes.txt was refused")
    expect(message).to_contain_text(".csv")  # the service's 415 detail names the accepted types
    expect(message).to_have_class(re.compile(r"\berror\b"))


def test_dropping_a_file_on_the_page_uploads_it(api: ApiServer, page: Page) -> None:
    _sign_in(page, api, register(api, "dropper").username)
    page.locator("#drop-zone").evaluate(
        """(zone, text) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([text], "dropped.csv", { type: "text/csv" }));
            zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
        }""",
        csv_bytes(make_normal_transactions(120, seed=42)).decode(),
    )
    expect(page.locator("#upload-message")).to_contain_text("Uploaded dropped.csv: 120 rows")
    expect(page.locator("#datasets li .dataset-name")).to_have_text(["dropped.csv"])
    expect(page.locator("#datasets li .badge")).to_have_text(["uploaded"])


def test_wrong_password_shows_the_servers_detail(api: ApiServer, page: Page) -> None:
    page.goto(api.url)
    page.get_by_label("Username").fill(register(api, "forgetful").username)
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#sign-in-message")).not_to_be_empty()
    expect(page.locator("#workspace")).to_be_hidden()


def test_signing_in_works_from_the_keyboard_and_signing_out_forgets_the_token(api: ApiServer, page: Page) -> None:
    username = register(api, "keyboard").username
    page.goto(api.url)
    page.keyboard.press("Tab")  # the skip link first
    page.keyboard.press("Tab")
    expect(page.get_by_label("Username")).to_be_focused()
    page.keyboard.type(username)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.locator("#account-name")).to_have_text(username)
    assert page.evaluate("sessionStorage.getItem('anomaly.token')")

    page.reload()  # the token outlives a reload within the browser session
    expect(page.locator("#account-name")).to_have_text(username)
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#sign-in-view")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('anomaly.token')") is None
    page.reload()
    expect(page.locator("#sign-in-view")).to_be_visible()
    expect(page.locator("#workspace")).to_be_hidden()


def test_the_page_and_the_api_docs_are_both_served(api: ApiServer, page: Page) -> None:
    answer = page.request.get(f"{api.url}/")
    assert answer.ok and "text/html" in answer.headers["content-type"]
    assert "default-src 'self'" in answer.headers["content-security-policy"]
    assert page.request.get(f"{api.url}/docs").ok
    assert "/" not in page.request.get(f"{api.url}/openapi.json").json()["paths"]
