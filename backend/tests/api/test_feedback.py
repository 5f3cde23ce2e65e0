"""Analysts' feedback through the API: labels on rows that survive re-analysis, the listing filtered by them,
the precision and the threshold they suggest (one click to apply it), and training that leaves out the rows
labelled anomalies."""

from __future__ import annotations

import io
from typing import Any

import httpx
import pandas as pd
import pytest

from app.utils.sample_data import inject_anomalies, make_normal_transactions
from tests.api.support import (
    Account,
    ApiServer,
    csv_bytes,
    patient_records,
    register,
    train,
    upload_ok,
    wait_for_status,
    wait_for_training,
)


def _label(client: httpx.Client, account: Account, dataset_id: str, row: int, label: str | None, **body: Any):
    return client.put(
        f"/api/anomaly/datasets/{dataset_id}/rows/{row}/label", headers=account.headers, json={"label": label, **body}
    )


def _anomalies(client: httpx.Client, account: Account, dataset_id: str, **params: Any) -> dict[str, Any]:
    answer = client.get(f"/api/anomaly/datasets/{dataset_id}/anomalies", params=params, headers=account.headers)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


@pytest.fixture
def analysed(api: ApiServer, account: Account) -> tuple[str, dict[str, Any]]:
    """A dataset of 2,000 rows with injected anomalies, analysed at the model's percentile."""
    frame, _ = inject_anomalies(make_normal_transactions(2000, seed=81), fraction=0.02, seed=4)
    with api.client() as client:
        dataset_id = upload_ok(client, account, "ledger.csv", csv_bytes(frame))
        client.post(f"/api/anomaly/datasets/{dataset_id}/analyze", headers=account.headers)
        status = wait_for_status(client, account, dataset_id)
    assert status["status"] == "analyzed"
    return dataset_id, status


def test_labels_show_in_the_listing_filter_it_and_survive_reanalysis(
    api: ApiServer, account: Account, analysed: tuple[str, dict[str, Any]]
) -> None:
    dataset_id, status = analysed
    with api.client() as client:
        flagged = [item["row"] for item in _anomalies(client, account, dataset_id, limit=10)["items"]]
        confirmed = _label(client, account, dataset_id, flagged[0], "anomaly", note="fraud, confirmed by the bank")
        expected = [_label(client, account, dataset_id, row, "normal") for row in flagged[1:3]]
        page = _anomalies(client, account, dataset_id, limit=5)
        only_anomaly = _anomalies(client, account, dataset_id, label="anomaly")
        only_normal = _anomalies(client, account, dataset_id, label="normal")
        unlabelled = _anomalies(client, account, dataset_id, label="unlabelled", limit=4, offset=0)
        client.post(f"/api/anomaly/datasets/{dataset_id}/analyze", headers=account.headers, json={"force": True})
        assert wait_for_status(client, account, dataset_id)["status"] == "analyzed"
        after = _anomalies(client, account, dataset_id, label="normal")
        download = client.get(f"/api/anomaly/datasets/{dataset_id}/results", headers=account.headers)
        cleared = _label(client, account, dataset_id, flagged[1], None)
        after_clearing = _anomalies(client, account, dataset_id, label="normal")

    assert confirmed.status_code == 200 and confirmed.json()["label"] == "anomaly"
    assert confirmed.json()["note"] == "fraud, confirmed by the bank"
    assert all(answer.status_code == 200 for answer in expected)
    assert [item["label"] for item in page["items"][:3]] == ["anomaly", "normal", "normal"]
    assert page["items"][0]["note"] == "fraud, confirmed by the bank" and page["items"][3]["label"] is None
    assert [item["row"] for item in only_anomaly["items"]] == [flagged[0]] and only_anomaly["total"] == 1
    assert [item["row"] for item in only_normal["items"]] == flagged[1:3] and only_normal["total"] == 2
    assert [item["row"] for item in unlabelled["items"]] == flagged[3:7]
    assert unlabelled["total"] == status["anomaly_count"] - 3
    assert [item["row"] for item in after["items"]] == flagged[1:3], "the labels were lost by the re-analysis"
    downloaded = pd.read_csv(io.BytesIO(download.content))["label"]
    assert downloaded[flagged[0]] == "anomaly" and downloaded[flagged[1]] == downloaded[flagged[2]] == "normal"
    assert downloaded.notna().sum() == 3
    assert cleared.status_code == 200 and cleared.json()["label"] is None
    assert [item["row"] for item in after_clearing["items"]] == [flagged[2]]


def test_a_row_out_of_range_answers_422_and_another_users_dataset_404(
    api: ApiServer, account: Account, analysed: tuple[str, dict[str, Any]]
) -> None:
    dataset_id, status = analysed
    stranger = register(api)
    with api.client() as client:
        beyond = _label(client, account, dataset_id, status["row_count"], "anomaly")
        bad = _label(client, account, dataset_id, 0, "fraud")
        foreign = _label(client, stranger, dataset_id, 0, "anomaly")
        foreign_feedback = client.get(f"/api/anomaly/datasets/{dataset_id}/feedback", headers=stranger.headers)
        long_note = _label(client, account, dataset_id, 0, "normal", note="x" * 1001)
    assert beyond.status_code == 422 and "0 to 1999" in beyond.json()["detail"]
    assert bad.status_code == 422
    assert foreign.status_code == 404 and foreign_feedback.status_code == 404
    assert long_note.status_code == 422


def test_feedback_counts_precision_and_a_suggestion_that_one_click_applies(
    api: ApiServer, account: Account, analysed: tuple[str, dict[str, Any]]
) -> None:
    dataset_id, status = analysed
    with api.client() as client:
        before = client.get(f"/api/anomaly/datasets/{dataset_id}/feedback", headers=account.headers).json()
        items = _anomalies(client, account, dataset_id, limit=1000)["items"]
        lowest = items[-8:]  # the flagged rows just above the threshold: said to be expected
        for item in lowest:
            _label(client, account, dataset_id, item["row"], "normal")
        for item in items[:4]:
            _label(client, account, dataset_id, item["row"], "anomaly")
        feedback = client.get(f"/api/anomaly/datasets/{dataset_id}/feedback", headers=account.headers).json()
        suggested = feedback["suggestion"]["threshold_percentile"]
        applied = client.post(
            f"/api/anomaly/datasets/{dataset_id}/analyze",
            headers=account.headers,
            json={"threshold_percentile": suggested},
        )
        after = wait_for_status(client, account, dataset_id)
    assert before["suggestion"] is None and "Label some flagged rows" in before["advice"]
    assert feedback["labelled_anomalies"] == 4 and feedback["labelled_normals"] == 8
    assert feedback["flagged_anomalies"] == 4 and feedback["flagged_normals"] == 8
    assert feedback["precision"] == pytest.approx(4 / 12)
    suggestion = feedback["suggestion"]
    assert suggestion["threshold_percentile"] > status["threshold_percentile"]
    assert suggestion["misclassified_then"] <= suggestion["misclassified_now"] == 8
    assert suggestion["labelled_anomalies_flagged"] == 4
    assert f"threshold_percentile {suggested:g}" in feedback["advice"]
    assert applied.status_code == 202 and after["status"] == "analyzed"
    assert after["threshold_percentile"] == suggested
    assert after["anomaly_count"] == suggestion["rows_flagged"]


def test_training_from_a_dataset_leaves_out_its_rows_labelled_anomalies(api: ApiServer, account: Account) -> None:
    frame = patient_records(800, seed=82)
    frame.loc[[10, 20, 30], "glucose"] = [999.0, 998.0, 997.0]
    with api.client() as client:
        dataset_id = upload_ok(client, account, "patients.csv", csv_bytes(frame))
        for row in (10, 20, 30):
            assert _label(client, account, dataset_id, row, "anomaly").status_code == 200
        _label(client, account, dataset_id, 40, "normal")
        started = train(client, account, dataset_id, "cleaned", epochs=3, seed=1)
        trained = wait_for_training(client, account, started.json()["training_id"])
        detail = client.get("/api/anomaly/models/cleaned", headers=account.headers).json()
    assert trained["status"] == "trained", trained
    lineage = detail["versions"][0]["lineage"]
    assert lineage["labelled_anomalies_left_out"] == 3 and lineage["rows_used"] == 797
    assert trained["result"]["rows_used"] == 797
