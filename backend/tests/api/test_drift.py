"""The drift report of every analysis, through the API: a summary in the status, every column at /drift, and
"unavailable" (never a failure) for a model trained before drift statistics were recorded."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.utils.sample_data import make_normal_transactions
from tests.api.conftest import ServerFactory
from tests.api.support import Account, ApiServer, csv_bytes, register, upload_ok, wait_for_status
from tests.detector.mixed_tables import MODEL_BEFORE_DRIFT, mixed_scoring_frame


def _analysed(server: ApiServer, account: Account, content: bytes) -> tuple[str, dict[str, Any], dict[str, Any]]:
    with server.client() as client:
        dataset_id = upload_ok(client, account, "new-month.csv", content)
        assert client.post(f"/api/anomaly/datasets/{dataset_id}/analyze", headers=account.headers).status_code == 202
        status = wait_for_status(client, account, dataset_id)
        drift = client.get(f"/api/anomaly/datasets/{dataset_id}/drift", headers=account.headers)
    assert status["status"] == "analyzed", status
    assert drift.status_code == 200, drift.text
    return dataset_id, status, drift.json()


def test_rows_like_the_training_rows_fit(api: ApiServer, account: Account) -> None:
    _, status, drift = _analysed(api, account, csv_bytes(make_normal_transactions(5000, seed=91)))
    models = {model["name"]: model for model in _models(api, account)}
    assert status["drift"]["verdict"] == "fits" and status["drift"]["shifted_columns"] == []
    assert drift["verdict"] == "fits" and drift["available"] and drift["rows"] == 5000
    assert drift["total_columns"] == len(models["AutoEncoder"]["features"]) == len(drift["columns"])
    assert not [column["name"] for column in drift["columns"] if column["flagged"]]
    column = drift["columns"][0]
    assert {"psi", "unseen_share", "missing_rate", "reference_missing_rate", "missing_rate_change", "level"} <= set(
        column
    )
    assert column["bins"] and {"label", "reference_share", "observed_share"} <= set(column["bins"][0])


def test_one_shifted_column_is_named_first_and_alone(api: ApiServer, account: Account) -> None:
    frame = make_normal_transactions(5000, seed=92)
    frame["value3"] = frame["value3"] + frame["value3"].std()
    _, status, drift = _analysed(api, account, csv_bytes(frame))
    assert status["drift"]["verdict"] == "shifted"
    assert status["drift"]["shifted_columns"] == ["value3"] and "retrain" in status["drift"]["advice"]
    assert drift["flagged_columns"] == ["value3"]
    assert drift["columns"][0]["name"] == "value3" and drift["columns"][0]["flagged"]
    assert drift["columns"][0]["psi"] >= 0.1
    assert not any(column["flagged"] for column in drift["columns"][1:])
    with api.client() as client:
        page = client.get(
            f"/api/anomaly/datasets/{status['dataset_id']}/drift",
            params={"limit": 2, "offset": 1},
            headers=account.headers,
        ).json()
    assert [column["name"] for column in page["columns"]] == [column["name"] for column in drift["columns"][1:3]]
    assert page["total_columns"] == drift["total_columns"]


def _models(server: ApiServer, account: Account) -> list[dict[str, Any]]:
    with server.client() as client:
        answer: list[dict[str, Any]] = client.get("/api/anomaly/models", headers=account.headers).json()
    return answer


@pytest.fixture(scope="module")
def old_model_api(
    server_factory: ServerFactory, server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> ApiServer:
    """A server whose model was saved by the version before drift statistics."""
    folder = tmp_path_factory.mktemp("old-model") / "AutoEncoder"
    shutil.copytree(MODEL_BEFORE_DRIFT / "AutoEncoder", folder)
    env = {**server_env, "MONGODB_DB": "old_model", "AUTOENCODER_MODEL_PATH": str(folder)}
    return server_factory("old-model-api", env).wait_until_up()


def test_a_model_trained_before_drift_statistics_reports_drift_unavailable_and_still_analyses(
    old_model_api: ApiServer,
) -> None:
    account = register(old_model_api)
    # What the earlier version scored for these rows read from CSV: the analysis flags the same number.
    expected = np.load(Path(MODEL_BEFORE_DRIFT) / "scores_from_csv.npy")
    _, status, drift = _analysed(old_model_api, account, csv_bytes(mixed_scoring_frame()))
    assert status["anomaly_count"] == int((expected > status["threshold"]).sum())
    assert status["drift"]["available"] is False and status["drift"]["verdict"] == "unavailable"
    assert "retrain" in status["drift"]["reason"]
    assert drift["verdict"] == "unavailable" and drift["columns"] == []
