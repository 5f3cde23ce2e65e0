"""The analysts' web page, driven in headless Chromium (Debian's package) against a real server process.

Playwright for Python drives ``/usr/bin/chromium``; it never downloads a browser (``make test`` installs
Debian's ``chromium`` when it is missing). Screenshots of the result view, the training view, the Models panel
and the feedback box go to ``test-output/``.
"""

from __future__ import annotations

import re
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from app.utils.sample_data import make_normal_transactions
from tests.api.support import (
    ApiServer,
    csv_bytes,
    patient_records,
    register,
    train,
    upload_ok,
    wait_for_training,
)

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
TRAINING_TIMEOUT_MS = 180_000
# Rows of the second patients' file given values far outside what the model was trained on.
SUSPICIOUS_ROWS = {5: 900.0, 50: -300.0, 300: 1200.0}
# The columns before the table's data columns: #, Row, Score, Your label, Why.
LEADING_COLUMNS = 5


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


@pytest.fixture(scope="module")
def patients_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,000 normal rows of a schema no deployment model knows."""
    path = tmp_path_factory.mktemp("web-patients") / "patients.csv"
    path.write_bytes(csv_bytes(patient_records(1000, seed=61)))
    return path


@pytest.fixture(scope="module")
def suspicious_patients_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 rows of the same schema, three of them with an impossible glucose."""
    frame = patient_records(400, seed=62)
    frame.loc[list(SUSPICIOUS_ROWS), "glucose"] = list(SUSPICIOUS_ROWS.values())
    path = tmp_path_factory.mktemp("web-patients") / "patients-march.csv"
    path.write_bytes(csv_bytes(frame))
    return path


def _sign_in(page: Page, api: ApiServer, username: str, *, create: bool = False) -> None:
    page.goto(api.url)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account" if create else "Sign in").click()
    expect(page.locator("#account-name")).to_have_text(username)


def _upload(page: Page, path: Path, rows: str) -> None:
    page.locator("#file-input").set_input_files(path)
    expect(page.locator("#upload-message")).to_contain_text(f"Uploaded {path.name}: {rows} rows")
    expect(page.locator("#result-title")).to_have_text(path.name)


def _upload_and_analyse(page: Page, path: Path, rows: str = "300") -> None:
    _upload(page, path, rows)
    page.get_by_role("button", name="Analyse", exact=True).click()
    expect(page.locator("#result-body")).to_be_visible(timeout=ANALYSIS_TIMEOUT_MS)


def _number_in(locator: Locator, pattern: str) -> int:
    """The number ``pattern``'s group captures in the element's text."""
    found = re.search(pattern, locator.inner_text())
    assert found, f"{pattern!r} not in {locator.inner_text()!r}"
    return int(found.group(1).replace(",", ""))


def _loss_points(page: Page) -> int:
    """How many epochs the loss chart's training line has."""
    points = page.locator("#loss-chart polyline.series.loss")
    return len(points.get_attribute("points").split()) if points.count() else 0


def _wait_for_loss_points(page: Page, at_least: int) -> None:
    page.wait_for_function(
        """(count) => {
            const line = document.querySelector("#loss-chart polyline.series.loss");
            return line !== null && line.getAttribute("points").split(" ").length >= count;
        }""",
        arg=at_least,
        timeout=TRAINING_TIMEOUT_MS,
    )


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
    column_index = LEADING_COLUMNS + list(pd.read_csv(planted_csv, nrows=0).columns).index(PLANTED_COLUMN)
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


def test_an_analyst_trains_a_model_for_a_new_schema_analyses_with_it_and_labels_its_anomalies(
    api: ApiServer, page: Page, patients_csv: Path, suspicious_patients_csv: Path
) -> None:
    username = f"trainer-{uuid.uuid4().hex[:8]}"
    _sign_in(page, api, username, create=True)
    _upload(page, patients_csv, "1,000")

    # No model knows these columns: the 422 comes with an offer to train one.
    page.get_by_role("button", name="Analyse", exact=True).click()
    expect(page.locator("#analysis-message")).to_contain_text("Dataset columns don't match model")
    page.get_by_role("button", name="Train a model on this dataset").click()
    expect(page.locator("#train-box")).to_have_attribute("open", "")
    expect(page.get_by_label("Model name")).to_have_value("patients")
    expect(page.get_by_label("Model name")).to_be_focused()

    # A long training: the chart grows epoch by epoch, then Cancel stops it.
    page.get_by_text("More options").click()
    page.get_by_label("Epochs (at most)").fill("200")
    page.get_by_role("button", name="Train", exact=True).click()
    expect(page.locator("#training-title")).to_have_text("Training patients")
    _wait_for_loss_points(page, 2)
    seen = _loss_points(page)
    _wait_for_loss_points(page, seen + 1)
    expect(page.locator("#training-progress-label")).to_contain_text(re.compile(r"Epoch \d+ of 200 · loss [\d.]+"))
    expect(page.locator("#loss-chart polyline.series.val-loss")).to_have_count(1)
    page.reload()  # the tab keeps following its training
    expect(page.locator("#training-title")).to_have_text("Training patients")
    _wait_for_loss_points(page, seen + 2)
    page.get_by_role("button", name="Cancel training").click()
    expect(page.locator("#training-message")).to_contain_text("Cancelled by its owner", timeout=TRAINING_TIMEOUT_MS)
    expect(page.get_by_role("button", name="Cancel training")).to_be_hidden()

    # A short one, leaving a column out, followed to the end: the report and the validation check.
    page.get_by_role("button", name="Open patients.csv").click()
    page.get_by_text("Train a model from these rows").click()
    page.get_by_text("More options").click()
    page.get_by_label("Epochs (at most)").fill("3")
    page.get_by_label("Columns to leave out").select_option(["skin_thickness"])
    with page.expect_response(lambda answer: answer.request.method == "POST" and "/models" in answer.url) as started:
        page.get_by_role("button", name="Train", exact=True).click()
    expect(page.locator("#training-message")).to_contain_text("Trained patients version 1", timeout=TRAINING_TIMEOUT_MS)
    token = page.evaluate("sessionStorage.getItem('anomaly.token')")
    trained = page.request.get(
        f"{api.url}/api/anomaly/trainings/{started.value.json()['training_id']}",
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    epochs_run = _number_in(page.locator("#training-progress-label"), r"(\d+) epochs? run")
    assert epochs_run == trained["result"]["epochs_run"] and 1 <= epochs_run <= 3
    # The chart has every epoch the service recorded (it records progress at most twice a second).
    assert _loss_points(page) == len(trained["progress"]["loss"]) >= 1
    expect(page.locator("#validation-check")).to_contain_text(
        re.compile(r"of 1,000 training rows flagged \([\d.]+%\)\. (Good!|Anomaly rate is (above|below))")
    )
    expect(page.locator("#trained-features")).to_have_text("7")
    expect(page.locator("#trained-rows")).to_have_text("1,000")
    report = page.locator("#training-report")
    expect(report).to_be_visible()
    expect(report).to_have_attribute("src", re.compile(r"^blob:"))
    page.wait_for_function("document.querySelector('#training-report').naturalWidth > 0")
    OUTPUT_DIR.mkdir(exist_ok=True)
    page.screenshot(path=OUTPUT_DIR / "web-training-1280.png", full_page=True)

    # The Models panel: the new model with version 1 active and its lineage; the deployment's read-only.
    mine = page.locator("#models li[data-name='patients']")
    expect(mine.locator("summary")).to_contain_text("version 1 active · 1 version")
    mine.locator("summary").click()
    version = mine.locator(".version")
    expect(version).to_have_count(1)
    expect(version.locator("h3")).to_contain_text("Version 1")
    expect(version.locator(".badge.active")).to_have_text("active")
    for words in ("patients.csv: 1,000 of 1,000 rows used", username, "3 epochs at most", "skin_thickness"):
        expect(version).to_contain_text(words)
    expect(version).to_contain_text(re.compile(r"% of training rows flagged: (Good!|Anomaly rate is)"))
    expect(mine.get_by_role("button", name="Activate version 1 of patients")).to_have_count(0)
    with page.expect_download() as model_download:
        mine.get_by_role("button", name="Download version 1 of patients").click()
    assert model_download.value.suggested_filename == "patients-v1.zip"
    with zipfile.ZipFile(model_download.value.path()) as archive:
        assert {"autoencoder.h5", "metadata.pkl"} <= set(archive.namelist())
    deployment = page.locator("#models li[data-name='AutoEncoder']")
    expect(deployment.locator("summary")).to_contain_text("read-only")
    deployment.locator("summary").click()
    expect(deployment).to_contain_text("Read-only")
    expect(deployment.get_by_role("button")).to_have_count(0)
    page.locator("#models").scroll_into_view_if_needed()
    page.screenshot(path=OUTPUT_DIR / "web-models-1280.png", full_page=True)

    # Another file of that schema is analysed with the new model; the planted rows come first.
    _upload(page, suspicious_patients_csv, "400")
    page.get_by_role("button", name="Analyse", exact=True).click()
    expect(page.locator("#result-body")).to_be_visible(timeout=ANALYSIS_TIMEOUT_MS)
    expect(page.locator("#model-name")).to_contain_text("patients")
    expect(page.locator("#model-name")).to_contain_text("version 1")
    count = _anomaly_count(page)
    rows = page.locator("#anomalies-table tbody tr")
    planted = sorted(str(row + 1) for row in SUSPICIOUS_ROWS)
    assert sorted(rows.nth(index).locator("td").nth(1).inner_text() for index in range(3)) == planted
    glucose = LEADING_COLUMNS + list(pd.read_csv(suspicious_patients_csv, nrows=0).columns).index("glucose")
    expect(rows.first.locator("td").nth(glucose)).to_have_class(re.compile(r"\bhot hot-1\b"))
    expect(page.locator("#feedback-summary")).to_contain_text("Mark flagged rows below")

    # Labels: real anomaly on the first row, expected on the second (from the keyboard); a third set and cleared.
    first, second, third = rows.nth(0), rows.nth(1), rows.nth(2)
    first_row, second_row = first.locator("td").nth(1).inner_text(), second.locator("td").nth(1).inner_text()
    first.get_by_role("button", name="real anomaly").click()
    expect(first.get_by_role("button", name="real anomaly")).to_have_attribute("aria-pressed", "true")
    expect(first.get_by_role("button", name="expected")).to_have_attribute("aria-pressed", "false")
    second.get_by_role("button", name="expected").focus()
    page.keyboard.press("Enter")
    expect(second.get_by_role("button", name="expected")).to_have_attribute("aria-pressed", "true")
    third.get_by_role("button", name="expected").click()
    expect(third.get_by_role("button", name="expected")).to_have_attribute("aria-pressed", "true")
    third.get_by_role("button", name="expected").click()
    expect(third.get_by_role("button", name="expected")).to_have_attribute("aria-pressed", "false")
    expect(page.locator("#label-message")).to_contain_text("label cleared")

    # The feedback box: counts, precision, and the suggestion, applied in one click.
    expect(page.locator("#feedback-anomalies")).to_contain_text("1")
    expect(page.locator("#feedback-normals")).to_contain_text("1")
    expect(page.locator("#feedback-precision")).to_contain_text("50%")
    apply = page.locator("#apply-suggestion")
    expect(apply).to_have_text(re.compile(r"^Re-analyse at \d+(\.\d)?$"))
    suggested = float(apply.inner_text().split()[-1])
    would_flag = _number_in(page.locator("#feedback-suggestion"), r"would flag ([\d,]+) rows?")
    assert suggested > 95
    page.locator("#feedback").scroll_into_view_if_needed()
    page.screenshot(path=OUTPUT_DIR / "web-feedback-1280.png", full_page=True)
    apply.click()
    expect(page.locator("#count-change")).to_contain_text(f"was {count} at the 95th", timeout=ANALYSIS_TIMEOUT_MS)
    expect(page.locator("#threshold")).to_contain_text(f"{suggested:g}th percentile")
    assert _anomaly_count(page) == would_flag

    # The labels survive the re-analysis, and the filter lists the rows by them.
    expect(rows.first.get_by_role("button", name="real anomaly")).to_have_attribute("aria-pressed", "true")
    show = page.get_by_label("Show", exact=True)
    show.select_option(label="real anomalies")
    expect(page.locator("#page-label")).to_have_text("Anomalies 1–1 of 1 labelled real")
    expect(rows.locator("td:nth-child(2)")).to_have_text([first_row])
    show.select_option(label="expected")
    expect(rows.locator("td:nth-child(2)")).to_have_text([second_row])
    show.select_option(label="unlabelled")
    expect(page.locator("#page-label")).to_contain_text(f"of {would_flag - 2} unlabelled")
    expect(rows.get_by_role("button", name="real anomaly", pressed=True)).to_have_count(0)


def test_the_models_panel_rolls_a_model_back_and_deletes_a_version_then_the_model(api: ApiServer, page: Page) -> None:
    account = register(api, "versions")
    with api.client() as client:
        dataset_id = upload_ok(client, account, "clinic.csv", csv_bytes(patient_records(300, seed=63)))
        for epochs in (2, 3):
            started = train(client, account, dataset_id, "clinic", epochs=epochs, seed=1)
            assert started.status_code == 202, started.text
            assert wait_for_training(client, account, started.json()["training_id"])["status"] == "trained"
    dialogs: list[str] = []
    _sign_in(page, api, account.username)
    item = page.locator("#models li[data-name='clinic']")
    expect(item.locator("summary")).to_contain_text("version 2 active · 2 versions")
    item.locator("summary").click()
    expect(item.locator(".version")).to_have_count(2)
    expect(item.locator(".version.active h3")).to_contain_text("Version 2")

    item.get_by_role("button", name="Activate version 1 of clinic").click()
    expect(page.locator("#models-message")).to_contain_text("Version 1 of clinic is active")
    expect(item.locator("summary")).to_contain_text("version 1 active")
    expect(item.locator(".version.active h3")).to_contain_text("Version 1")
    expect(page.locator("#model-choice option[value='clinic']")).to_have_text("clinic (yours, version 1)")
    expect(item.get_by_role("button", name="Delete version 1 of clinic")).to_have_count(0)

    page.once("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    item.get_by_role("button", name="Delete version 2 of clinic").click()
    expect(item.locator(".version")).to_have_count(2)
    page.once("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
    item.get_by_role("button", name="Delete version 2 of clinic").click()
    expect(page.locator("#models-message")).to_contain_text("Deleted version 2 of clinic.")
    expect(item.locator(".version")).to_have_count(1)
    expect(item.locator("summary")).to_contain_text("version 1 active · 1 version")

    page.once("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
    item.get_by_role("button", name="Delete model clinic").click()
    expect(page.locator("#models-message")).to_contain_text("Deleted the model clinic.")
    expect(item).to_have_count(0)
    assert dialogs == ["Delete version 2 of clinic? Analyses already done keep their results."] * 2 + [
        "Delete the model clinic and its 1 version? Analyses already done keep their results."
    ]
    with api.client() as client:
        assert client.get("/api/anomaly/models/clinic", headers=account.headers).status_code == 404


def test_a_bad_training_request_says_what_to_fix(api: ApiServer, page: Page, tmp_path: Path) -> None:
    small = tmp_path / "few-patients.csv"
    small.write_bytes(csv_bytes(patient_records(150, seed=64)))
    _sign_in(page, api, register(api, "bad-training").username)
    _upload(page, small, "150")
    page.get_by_text("Train a model from these rows").click()
    message = page.locator("#train-message")
    name = page.get_by_label("Model name")
    name.fill("../evil")
    page.get_by_role("button", name="Train", exact=True).click()
    expect(message).to_have_text("Name the model with 1-64 letters, digits, _, . or - (not starting with .).")
    name.fill("fine")
    page.get_by_text("More options").click()
    page.get_by_label("Epochs (at most)").fill("201")
    page.get_by_role("button", name="Train", exact=True).click()
    expect(message).to_have_text("Epochs must be a whole number from 1 to 200.")
    page.get_by_label("Epochs (at most)").fill("5")
    name.fill("AutoEncoder")  # the deployment's model: refused by the service, its detail shown
    page.get_by_role("button", name="Train", exact=True).click()
    expect(message).to_contain_text("'AutoEncoder' is the name of one of the deployment's models")
    expect(message).to_have_class(re.compile(r"\berror\b"))
    expect(page.locator("#training-view")).to_be_hidden()


def test_the_result_view_fits_a_390_px_screen(api: ApiServer, browser: Browser, planted_csv: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        _sign_in(page, api, register(api, "phone").username)
        _upload_and_analyse(page, planted_csv)
        page.get_by_text("Train a model from these rows").click()
        page.get_by_text("More options").click()
        page.locator("#models li[data-name='AutoEncoder'] summary").click()
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
