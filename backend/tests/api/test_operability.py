"""What an operator sees: Prometheus metrics at /metrics, and one JSON log line per request and per analysis."""

from __future__ import annotations

import uuid

from prometheus_client.parser import text_string_to_metric_families

from app.utils.sample_data import make_normal_transactions
from tests.api.support import Account, ApiServer, analysis_events, csv_bytes, upload_ok, wait_for_status

STATUS_ROUTE = "/api/anomaly/datasets/{dataset_id}/status"


def _metrics(api: ApiServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, by name and labels."""
    with api.client() as client:
        answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_analyses_rows_and_the_queue(
    api: ApiServer, second_api: ApiServer, account: Account
) -> None:
    """Each launcher's /metrics adds up its API and its job worker; the analysis may run on either launcher's."""
    before, workers_before = _metrics(api), _metrics(second_api)
    with api.client() as client:
        dataset_id = upload_ok(client, account, "metrics.csv", csv_bytes(make_normal_transactions(700, seed=71)))
        client.post(f"/api/anomaly/datasets/{dataset_id}/analyze", headers=account.headers)
        status = wait_for_status(client, account, dataset_id)
        client.get(f"/api/anomaly/datasets/{'0' * 24}/status", headers=account.headers)
    after, workers_after = _metrics(api), _metrics(second_api)

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    def analyses_grew(name: str, **labels: str) -> float:
        return grew(name, **labels) + _value(workers_after, name, **labels) - _value(workers_before, name, **labels)

    assert status["status"] == "analyzed"
    assert grew("http_requests_total", method="GET", route=STATUS_ROUTE, status="200") >= 1
    assert grew("http_requests_total", method="GET", route=STATUS_ROUTE, status="404") == 1
    assert grew("http_requests_total", method="POST", route="/api/anomaly/datasets/upload", status="201") == 1
    assert grew("http_request_duration_seconds_count", method="GET", route=STATUS_ROUTE) >= 2
    assert analyses_grew("analysis_rows_scored_total") >= 700
    assert analyses_grew("analysis_duration_seconds_count", outcome="analyzed") >= 1
    assert ("analysis_queue_depth", ()) in after and ("analyses_running", ()) in after
    assert {("analysis_failures_total", (("reason", reason),)) for reason in ("error", "database")} <= set(after)
    assert not [labels for name, labels in after if name == "http_requests_total" and dataset_id in str(labels)]


def test_each_request_has_one_json_log_line_with_its_ids(api: ApiServer, account: Account) -> None:
    request_id = f"test-{uuid.uuid4().hex}"
    with api.client() as client:
        me = client.get("/api/auth/me", headers=account.headers).json()
        answer = client.get(
            f"/api/anomaly/datasets/{'0' * 24}/status?secret=abc",
            headers={**account.headers, "X-Request-ID": request_id},
        )
        generated = client.get("/health").headers["x-request-id"]
    assert answer.headers["x-request-id"] == request_id
    lines = [event for event in api.events("request") if event["request_id"] == request_id]
    assert len(lines) == 1
    line = lines[0]
    assert line["method"] == "GET" and line["route"] == STATUS_ROUTE and line["status"] == 404
    assert line["user_id"] == me["id"]
    assert line["duration_ms"] > 0 and line["time"] and line["level"] == "info"
    assert "secret" not in str(line)
    assert [event for event in api.events("request") if event["request_id"] == generated][0]["user_id"] is None


def test_each_analysis_has_a_json_log_line_with_ids_counts_and_timings(
    api: ApiServer, second_api: ApiServer, account: Account
) -> None:
    with api.client() as client:
        dataset_id = upload_ok(client, account, "logged.csv", csv_bytes(make_normal_transactions(300, seed=72)))
        session_id = client.post(f"/api/anomaly/datasets/{dataset_id}/analyze", headers=account.headers).json()[
            "session_id"
        ]
        status = wait_for_status(client, account, dataset_id)
    lines = analysis_events([api, second_api], {session_id})
    assert len(lines) == 1
    line = lines[0]
    assert line["outcome"] == "analyzed" and line["dataset_id"] == dataset_id
    assert line["rows"] == 300 and line["anomaly_count"] == status["anomaly_count"]
    assert line["timings"]["total_seconds"] > 0 and "score_seconds" in line["timings"]
    assert line["worker"] and line["attempt"] == 1
