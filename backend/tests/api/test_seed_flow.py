"""The seed's curl flow, verbatim: upload test.xlsx, analyze, poll the status until it is analysed."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pandas as pd

from app.demo_model import write_try_file
from app.utils.sample_data import make_normal_transactions
from tests.api.support import Account, ApiServer, upload_ok, wait_for_status, xlsx_bytes


def test_upload_analyze_and_poll_status_until_analyzed(api: ApiServer, account: Account, tmp_path: Path) -> None:
    """With the test.xlsx that `make run` writes for README's flow."""
    test_xlsx = tmp_path / "test.xlsx"
    write_try_file(test_xlsx)
    with api.client() as client:
        uploaded = client.post(
            "/api/anomaly/datasets/upload",
            headers=account.headers,
            files={"file": ("test.xlsx", test_xlsx.read_bytes())},
        )
        assert uploaded.status_code == 201, uploaded.text
        dataset_id = uploaded.json()["id"]
        assert len(dataset_id) == 24 and int(dataset_id, 16) >= 0

        started = client.post(f"/api/anomaly/datasets/{dataset_id}/analyze", headers=account.headers)
        assert started.status_code == 202, started.text
        assert started.json()["reused"] is False
        assert started.json()["session_id"]

        status = wait_for_status(client, account, dataset_id)
    assert status["status"] == "analyzed", status
    assert status["progress"] == 100
    assert isinstance(status["anomaly_count"], int)
    assert 0 < status["anomaly_count"] < 500 * 0.2
    assert status["row_count"] == 500
    assert isinstance(status["threshold"], float)
    assert status["error"] is None
    assert status["timings"]["total_seconds"] > 0


def test_upload_describes_the_stored_file(api: ApiServer, account: Account) -> None:
    content = xlsx_bytes(make_normal_transactions(120, seed=2))
    with api.client() as client:
        dataset_id = upload_ok(client, account, "test.xlsx", content)
        described = client.get(f"/api/anomaly/datasets/{dataset_id}", headers=account.headers).json()
    assert described["filename"] == "test.xlsx"
    assert described["size"] == len(content)
    assert described["sha256"] == hashlib.sha256(content).hexdigest()
    assert described["row_count"] == 120
    assert described["column_count"] == 20
    assert described["columns"][:4] == ["id", "timestamp", "region", "channel"]
    assert described["status"] == "uploaded"


def test_status_before_analysis_is_uploaded(api: ApiServer, account: Account) -> None:
    with api.client() as client:
        dataset_id = upload_ok(client, account, "test.xlsx", xlsx_bytes(make_normal_transactions(150, seed=3)))
        status = client.get(f"/api/anomaly/datasets/{dataset_id}/status", headers=account.headers).json()
    assert status["status"] == "uploaded"
    assert status["progress"] == 0
    assert status["anomaly_count"] is None
    assert status["row_count"] == 150


def test_anomalies_are_ranked_with_values_and_top_features(api: ApiServer, account: Account) -> None:
    frame = make_normal_transactions(400, seed=6)
    frame.loc[17, "value3"] = frame["value3"].max() * 50  # one row far off the normal range
    with api.client() as client:
        dataset_id = upload_ok(client, account, "test.xlsx", xlsx_bytes(frame))
        client.post(f"/api/anomaly/datasets/{dataset_id}/analyze", headers=account.headers)
        status = wait_for_status(client, account, dataset_id)
        page = client.get(
            f"/api/anomaly/datasets/{dataset_id}/anomalies", params={"limit": 5}, headers=account.headers
        ).json()
        rest = client.get(
            f"/api/anomaly/datasets/{dataset_id}/anomalies",
            params={"limit": 1000, "offset": 5},
            headers=account.headers,
        ).json()
    assert page["total"] == status["anomaly_count"]
    scores = [item["score"] for item in page["items"] + rest["items"]]
    assert scores == sorted(scores, reverse=True)
    assert len(scores) == status["anomaly_count"]
    top = page["items"][0]
    assert top["row"] == 17
    assert top["values"]["id"] == 18
    assert top["values"]["value3"] == frame.loc[17, "value3"]
    assert top["top_features"][0]["column"] == "value3"
    assert 0 < top["top_features"][0]["share"] <= 1


def test_results_download_has_every_row_with_score_and_label(api: ApiServer, account: Account) -> None:
    frame = make_normal_transactions(300, seed=8)
    with api.client() as client:
        dataset_id = upload_ok(client, account, "test.xlsx", xlsx_bytes(frame))
        client.post(f"/api/anomaly/datasets/{dataset_id}/analyze", headers=account.headers)
        status = wait_for_status(client, account, dataset_id)
        as_csv = client.get(f"/api/anomaly/datasets/{dataset_id}/results?format=csv", headers=account.headers)
        as_xlsx = client.get(f"/api/anomaly/datasets/{dataset_id}/results?format=xlsx", headers=account.headers)
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    assert "attachment" in as_csv.headers["content-disposition"]
    results = pd.read_csv(io.BytesIO(as_csv.content))
    assert len(results) == 300
    assert list(results.columns) == [*frame.columns, "anomaly_score", "is_anomaly", "top_feature", "label"]
    assert results["is_anomaly"].sum() == status["anomaly_count"]
    assert results["id"].tolist() == frame["id"].tolist()
    workbook = pd.read_excel(io.BytesIO(as_xlsx.content), engine="calamine")
    assert len(workbook) == 300 and workbook["is_anomaly"].sum() == status["anomaly_count"]


def test_models_lists_the_loaded_model(api: ApiServer, account: Account) -> None:
    with api.client() as client:
        models = client.get("/api/anomaly/models", headers=account.headers).json()
    assert [model["name"] for model in models] == ["AutoEncoder"]
    assert models[0]["default"] is True
    assert "value1" in models[0]["features"]
    assert models[0]["version"] and models[0]["trained_at"]


def test_health_and_ready(api: ApiServer) -> None:
    with api.client() as client:
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"


def test_openapi_declares_error_responses(api: ApiServer) -> None:
    with api.client() as client:
        schema = client.get("/openapi.json").json()
        assert client.get("/docs").status_code == 200
    analyze = schema["paths"]["/api/anomaly/datasets/{dataset_id}/analyze"]["post"]["responses"]
    assert {"202", "401", "404", "422", "503"} <= set(analyze)
    upload = schema["paths"]["/api/anomaly/datasets/upload"]["post"]["responses"]
    assert {"201", "400", "401", "413", "415"} <= set(upload)
    assert schema["components"]["schemas"]["ErrorResponse"]["properties"]["detail"]
