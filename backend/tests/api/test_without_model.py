"""A service started without a model: it runs, says why it is not ready, and refuses analyses (503) unless
fallback training is on, in which case it trains on the uploaded data itself."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from app.utils.sample_data import make_normal_transactions
from tests.api.support import ApiServer, csv_bytes, register, upload_ok, wait_for_status


def test_ready_answers_503_with_the_reason_and_no_path(no_model_api: ApiServer, empty_model_path: Path) -> None:
    """Without a token, /ready says which check failed and what to do; where it looked stays in the log."""
    with no_model_api.client() as client:
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "not ready"
    assert body["checks"]["database"] == "ok" and body["checks"]["model"] == "missing"
    assert "python train_autoencoder_model.py data/normal_samples.xlsx" in body["detail"]
    assert str(empty_model_path.parent) not in ready.text and "autoencoder.h5" not in ready.text
    assert str(empty_model_path) in no_model_api.log_text()


def test_analyze_answers_503_with_the_seed_message_and_the_fix(no_model_api: ApiServer) -> None:
    account = register(no_model_api)
    with no_model_api.client() as client:
        dataset_id = upload_ok(client, account, "test.csv", csv_bytes(make_normal_transactions(150, seed=21)))
        answer = client.post(f"/api/anomaly/datasets/{dataset_id}/analyze", headers=account.headers)
        models = client.get("/api/anomaly/models", headers=account.headers).json()
    assert answer.status_code == 503
    detail = answer.json()["detail"]
    assert "No model provided and train_if_needed=False" in detail
    assert "python train_autoencoder_model.py data/normal_samples.xlsx" in detail
    assert models == []


def test_fallback_training_analyses_the_upload_and_progress_moves(fallback_api: ApiServer) -> None:
    account = register(fallback_api)
    with fallback_api.client() as client:
        dataset_id = upload_ok(client, account, "test.csv", csv_bytes(make_normal_transactions(1500, seed=22)))
        started = client.post(f"/api/anomaly/datasets/{dataset_id}/analyze", headers=account.headers)
        assert started.status_code == 202
        seen: list[tuple[str, int]] = []
        while not seen or seen[-1][0] not in ("analyzed", "failed"):
            status = client.get(f"/api/anomaly/datasets/{dataset_id}/status", headers=account.headers).json()
            seen.append((status["status"], status["progress"]))
            time.sleep(0.05)
    assert status["status"] == "analyzed", status
    assert isinstance(status["anomaly_count"], int) and 0 < status["anomaly_count"] < 1500 * 0.2
    assert status["model"] is None
    assert status["timings"]["train_seconds"] > 0
    partial = {progress for state, progress in seen if state == "analyzing" and 0 < progress < 100}
    assert partial, f"no progress between 0 and 100 was ever reported: {seen}"
    progresses = [progress for _, progress in seen]
    assert progresses == sorted(progresses)


def test_analysis_of_a_killed_worker_is_taken_up_again(fallback_api: ApiServer) -> None:
    """A job worker dies mid-analysis (SIGKILL): the launcher starts another, which claims the analysis once its
    lease runs out and finishes it."""
    account = register(fallback_api)
    with fallback_api.client() as client:
        dataset_id = upload_ok(client, account, "test.csv", csv_bytes(make_normal_transactions(3000, seed=23)))
        client.post(
            f"/api/anomaly/datasets/{dataset_id}/analyze", headers=account.headers, json={"threshold_percentile": 97}
        )
        wait_for_status(client, account, dataset_id, until=("analyzing",))
    for pid in fallback_api.worker_pids():
        os.kill(pid, signal.SIGKILL)
    with fallback_api.client() as client:
        status = wait_for_status(client, account, dataset_id)
    assert status["status"] == "analyzed", status
    assert status["attempts"] == 2
    assert isinstance(status["anomaly_count"], int)
