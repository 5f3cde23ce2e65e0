"""Users train their own models through the API: a durable training job from an uploaded dataset, versions
with lineage kept in MongoDB, served to that user's analyses (and nobody else's)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import numpy as np
import pandas as pd

from tests.api.support import Account, ApiServer, csv_bytes, upload_ok, wait_for_status

TRAINING_SECONDS = 120


def patient_records(n_rows: int, seed: int) -> pd.DataFrame:
    """A schema no deployment model knows: the kind of table a new user brings."""
    rng = np.random.default_rng(seed)
    age = rng.integers(21, 80, n_rows)
    glucose = rng.normal(110, 25, n_rows) + 0.3 * (age - 50)
    return pd.DataFrame(
        {
            "pregnancies": rng.poisson(3, n_rows),
            "glucose": glucose.round(1),
            "blood_pressure": rng.normal(72, 10, n_rows).round(1),
            "skin_thickness": rng.normal(25, 7, n_rows).round(1),
            "insulin": (glucose * 0.9 + rng.normal(0, 15, n_rows)).round(1),
            "bmi": rng.normal(31, 6, n_rows).round(1),
            "age": age,
            "clinic": rng.choice(["north", "south", "east"], n_rows),
        }
    )


def train(client: httpx.Client, account: Account, dataset_id: str, name: str, **options: Any) -> httpx.Response:
    return client.post(
        "/api/anomaly/models", headers=account.headers, json={"dataset_id": dataset_id, "name": name, **options}
    )


def wait_for_training(client: httpx.Client, account: Account, training_id: str, seen: list[dict[str, Any]] | None = None,
                      until: tuple[str, ...] = ("trained", "failed", "cancelled")) -> dict[str, Any]:  # fmt: skip
    deadline = time.monotonic() + TRAINING_SECONDS
    while True:
        answer = client.get(f"/api/anomaly/trainings/{training_id}", headers=account.headers)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        if seen is not None:
            seen.append(body)
        if body["status"] in until:
            return body
        assert time.monotonic() < deadline, f"training still {body['status']} after {TRAINING_SECONDS} s: {body}"
        time.sleep(0.1)


def test_train_follow_and_analyse_another_file_with_the_new_model(api: ApiServer, account: Account) -> None:
    with api.client() as client:
        normal_id = upload_ok(client, account, "patients.csv", csv_bytes(patient_records(1500, seed=1)))
        refused = client.post(f"/api/anomaly/datasets/{normal_id}/analyze", headers=account.headers)
        started = train(client, account, normal_id, "patients", epochs=8, seed=3)
        seen: list[dict[str, Any]] = []
        trained = wait_for_training(client, account, started.json()["training_id"], seen)
        listed = client.get("/api/anomaly/models", headers=account.headers).json()
        suspicious = patient_records(600, seed=2)
        suspicious.loc[[5, 50, 500], "glucose"] = [900.0, -300.0, 1200.0]
        suspicious_id = upload_ok(client, account, "new-patients.csv", csv_bytes(suspicious))
        analysed = client.post(f"/api/anomaly/datasets/{suspicious_id}/analyze", headers=account.headers)
        assert analysed.status_code == 202, (analysed.text, listed, trained)
        status = wait_for_status(client, account, suspicious_id)
        anomalies = client.get(
            f"/api/anomaly/datasets/{suspicious_id}/anomalies", params={"limit": 10}, headers=account.headers
        ).json()
    assert refused.status_code == 422 and "POST /api/anomaly/models" in refused.json()["detail"]
    assert started.status_code == 202, started.text
    assert started.json()["status"] == "queued" and started.json()["name"] == "patients"
    assert trained["status"] == "trained", trained
    epochs = [body["progress"].get("epoch") for body in seen if body["status"] == "running" and "epoch" in body["progress"]]
    assert epochs and epochs == sorted(epochs), f"no epoch progress seen: {seen[-1]}"
    assert len(trained["progress"]["loss"]) == trained["result"]["epochs_run"]
    result = trained["result"]
    assert result["model"] == "patients" and result["version"] == 1 and result["threshold"] > 0
    assert "clinic" in result["features"] and result["validation"]["row_count"] == 1500
    assert result["validation"]["verdict"] in ("good", "high", "low") and "%" in result["validation"]["message"]
    assert set(trained["timings"]) >= {"load_seconds", "train_seconds", "total_seconds"}
    mine = [model for model in listed if model["name"] == "patients"]
    assert mine and mine[0]["kind"] == "user" and mine[0]["active_version"] == 1 and mine[0]["versions"] == [1]
    assert analysed.status_code == 202, analysed.text
    assert status["status"] == "analyzed" and status["model"] == "patients" and status["model_version_number"] == 1
    assert status["model_version"] == result["model_version"]
    assert {item["row"] for item in anomalies["items"][:3]} == {5, 50, 500}
    assert anomalies["items"][0]["top_features"][0]["column"] == "glucose"
