"""Starting analyses: reuse of an equal analysis, force, settings, and what is refused before 202."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from app.utils.sample_data import make_normal_transactions
from tests.api.support import Account, ApiServer, csv_bytes, upload_ok, wait_for_status


def _analyze(
    client: httpx.Client, account: Account, dataset_id: str, body: dict[str, object] | None = None
) -> httpx.Response:
    return client.post(f"/api/anomaly/datasets/{dataset_id}/analyze", headers=account.headers, json=body)


def test_analyzing_again_reuses_the_finished_session(api: ApiServer, account: Account) -> None:
    with api.client() as client:
        dataset_id = upload_ok(client, account, "test.csv", csv_bytes(make_normal_transactions(200, seed=11)))
        first = _analyze(client, account, dataset_id).json()
        done = wait_for_status(client, account, dataset_id)
        again = _analyze(client, account, dataset_id)
    assert again.status_code == 202
    assert again.json()["reused"] is True
    assert again.json()["session_id"] == first["session_id"]
    assert again.json()["status"] == "analyzed"
    assert done["attempts"] == 1


def test_analyzing_while_queued_or_running_reuses_the_session(api: ApiServer, account: Account) -> None:
    with api.client() as client:
        dataset_id = upload_ok(client, account, "test.csv", csv_bytes(make_normal_transactions(200, seed=12)))
        first = _analyze(client, account, dataset_id).json()
        second = _analyze(client, account, dataset_id).json()
    assert second["reused"] is True
    assert second["session_id"] == first["session_id"]


def test_force_starts_a_new_session(api: ApiServer, account: Account) -> None:
    with api.client() as client:
        dataset_id = upload_ok(client, account, "test.csv", csv_bytes(make_normal_transactions(200, seed=13)))
        first = _analyze(client, account, dataset_id).json()
        first_done = wait_for_status(client, account, dataset_id)
        forced = _analyze(client, account, dataset_id, {"force": True})
        forced_done = wait_for_status(client, account, dataset_id)
        after = _analyze(client, account, dataset_id).json()
    assert forced.status_code == 202
    assert forced.json()["reused"] is False
    assert forced.json()["session_id"] != first["session_id"]
    assert forced_done["session_id"] == forced.json()["session_id"]
    assert forced_done["anomaly_count"] == first_done["anomaly_count"]  # same model, same data
    assert after["reused"] is True and after["session_id"] == forced.json()["session_id"]


def test_another_threshold_percentile_is_another_analysis(api: ApiServer, account: Account) -> None:
    with api.client() as client:
        dataset_id = upload_ok(client, account, "test.csv", csv_bytes(make_normal_transactions(400, seed=14)))
        _analyze(client, account, dataset_id)
        default = wait_for_status(client, account, dataset_id)
        stricter = _analyze(client, account, dataset_id, {"threshold_percentile": 99.5})
        strict = wait_for_status(client, account, dataset_id)
    assert stricter.json()["reused"] is False
    assert strict["threshold_percentile"] == 99.5
    assert strict["threshold"] > default["threshold"]
    assert strict["anomaly_count"] <= default["anomaly_count"]


def test_mismatched_columns_answer_422_before_any_work(api: ApiServer, account: Account) -> None:
    frame = make_normal_transactions(150, seed=15).drop(columns=["value3", "region"])
    with api.client() as client:
        dataset_id = upload_ok(client, account, "test.csv", csv_bytes(frame))
        answer = _analyze(client, account, dataset_id)
        status = client.get(f"/api/anomaly/datasets/{dataset_id}/status", headers=account.headers).json()
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert "Dataset columns don't match model" in detail
    assert "region" in detail and "value3" in detail
    assert status["status"] == "uploaded"


def test_unknown_model_answers_422(api: ApiServer, account: Account) -> None:
    with api.client() as client:
        dataset_id = upload_ok(client, account, "test.csv", csv_bytes(make_normal_transactions(120, seed=16)))
        answer = _analyze(client, account, dataset_id, {"model": "NoSuchModel"})
    assert answer.status_code == 422
    assert "AutoEncoder" in answer.json()["detail"]


def test_named_default_model_is_the_same_analysis(api: ApiServer, account: Account) -> None:
    with api.client() as client:
        dataset_id = upload_ok(client, account, "test.csv", csv_bytes(make_normal_transactions(120, seed=17)))
        unnamed = _analyze(client, account, dataset_id).json()
        named = _analyze(client, account, dataset_id, {"model": "AutoEncoder", "threshold_percentile": 95}).json()
    assert named["reused"] is True and named["session_id"] == unnamed["session_id"]


def test_threshold_percentile_out_of_range_answers_422(api: ApiServer, account: Account) -> None:
    with api.client() as client:
        dataset_id = upload_ok(client, account, "test.csv", csv_bytes(make_normal_transactions(120, seed=18)))
        answer = _analyze(client, account, dataset_id, {"threshold_percentile": 100})
    assert answer.status_code == 422


def test_anomalies_before_analysis_answer_409(api: ApiServer, account: Account) -> None:
    with api.client() as client:
        dataset_id = upload_ok(client, account, "test.csv", csv_bytes(make_normal_transactions(120, seed=19)))
        answer = client.get(f"/api/anomaly/datasets/{dataset_id}/anomalies", headers=account.headers)
    assert answer.status_code == 409
    assert "/analyze" in answer.json()["detail"]


def test_concurrent_equal_requests_share_one_session(api: ApiServer, second_api: ApiServer, account: Account) -> None:
    with api.client() as client:
        dataset_id = upload_ok(client, account, "test.csv", csv_bytes(make_normal_transactions(200, seed=20)))

    def analyze(index: int) -> dict[str, object]:
        with (api if index % 2 else second_api).client() as client:
            answer = _analyze(client, account, dataset_id)
        assert answer.status_code == 202
        body: dict[str, object] = answer.json()
        return body

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(analyze, range(6)))
    assert len({answer["session_id"] for answer in answers}) == 1
    assert [answer["reused"] for answer in answers].count(False) == 1
