"""The histogram of every row's anomaly score: bins, counts and the threshold, from the stored scores."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pandas as pd
import pytest

from app.utils.sample_data import inject_anomalies, make_normal_transactions
from tests.api.support import Account, ApiServer, csv_bytes, register, upload_ok, wait_for_status


@pytest.fixture(scope="module")
def analysed(api: ApiServer) -> tuple[Account, str]:
    """An account with one analysed dataset of 300 rows, a few of them anomalous."""
    account = register(api)
    frame, _ = inject_anomalies(make_normal_transactions(300, seed=31), fraction=0.03, seed=2)
    with api.client() as client:
        dataset_id = upload_ok(client, account, "histogram.csv", csv_bytes(frame))
        assert client.post(f"/api/anomaly/datasets/{dataset_id}/analyze", headers=account.headers).status_code == 202
        assert wait_for_status(client, account, dataset_id)["status"] == "analyzed"
    return account, dataset_id


def _histogram(client: httpx.Client, account: Account, dataset_id: str, **params: object) -> httpx.Response:
    return client.get(f"/api/anomaly/datasets/{dataset_id}/scores/histogram", headers=account.headers, params=params)


def _exported_scores(client: httpx.Client, account: Account, dataset_id: str) -> pd.DataFrame:
    answer = client.get(f"/api/anomaly/datasets/{dataset_id}/results", headers=account.headers)
    assert answer.status_code == 200, answer.text
    return pd.read_csv(io.BytesIO(answer.content))


def test_histogram_bins_every_row_by_its_stored_score(api: ApiServer, analysed: tuple[Account, str]) -> None:
    account, dataset_id = analysed
    with api.client() as client:
        answer = _histogram(client, account, dataset_id, bins=25)
        results = _exported_scores(client, account, dataset_id)
        status = client.get(f"/api/anomaly/datasets/{dataset_id}/status", headers=account.headers).json()
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert len(body["edges"]) == 26 and len(body["counts"]) == 25
    assert body["scale"] == "linear"
    assert np.all(np.diff(body["edges"]) > 0)
    assert sum(body["counts"]) == body["row_count"] == 300
    expected, _ = np.histogram(results["anomaly_score"], bins=np.asarray(body["edges"]))
    assert body["counts"] == expected.tolist()
    assert body["threshold"] == status["threshold"]
    assert body["anomaly_count"] == status["anomaly_count"] == int(results["is_anomaly"].sum())
    assert body["session_id"] == status["session_id"]


def test_histogram_range_holds_the_threshold_and_every_score(api: ApiServer, analysed: tuple[Account, str]) -> None:
    account, dataset_id = analysed
    with api.client() as client:
        body = _histogram(client, account, dataset_id).json()
        scores = _exported_scores(client, account, dataset_id)["anomaly_score"]
    assert len(body["counts"]) == 40  # the default
    assert body["edges"][0] <= body["threshold"] <= body["edges"][-1]
    assert body["edges"][0] <= scores.min() and scores.max() <= body["edges"][-1]


def test_log_scale_spaces_the_edges_geometrically(api: ApiServer, analysed: tuple[Account, str]) -> None:
    account, dataset_id = analysed
    with api.client() as client:
        body = _histogram(client, account, dataset_id, bins=10, scale="log").json()
    ratios = np.asarray(body["edges"][1:]) / np.asarray(body["edges"][:-1])
    assert body["scale"] == "log"
    assert np.allclose(ratios, ratios[0]) and ratios[0] > 1
    assert sum(body["counts"]) == 300


@pytest.mark.parametrize("bins", [4, 201, "many"])
def test_bins_outside_5_to_200_answer_422(api: ApiServer, analysed: tuple[Account, str], bins: object) -> None:
    account, dataset_id = analysed
    with api.client() as client:
        answer = _histogram(client, account, dataset_id, bins=bins)
    assert answer.status_code == 422


def test_histogram_before_analysis_answers_409(api: ApiServer, account: Account) -> None:
    with api.client() as client:
        dataset_id = upload_ok(client, account, "test.csv", csv_bytes(make_normal_transactions(120, seed=32)))
        answer = _histogram(client, account, dataset_id)
    assert answer.status_code == 409
    assert "/analyze" in answer.json()["detail"]


def test_another_users_histogram_answers_404(api: ApiServer, analysed: tuple[Account, str]) -> None:
    _, dataset_id = analysed
    with api.client() as client:
        answer = _histogram(client, register(api, "other"), dataset_id)
    assert answer.status_code == 404
