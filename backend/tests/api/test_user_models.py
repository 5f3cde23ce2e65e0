"""Users train their own models through the API: a durable training job from an uploaded dataset, versions
with lineage kept in MongoDB, served to that user's analyses (and nobody else's).

The servers here have databases of their own, so only their own job worker runs these trainings.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from app.utils.anomaly_detector import TabularAnomalyDetector
from tests.api.conftest import ServerFactory
from tests.api.support import (
    BACKEND_DIR,
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

LEASE_SECONDS = "3"


@pytest.fixture(scope="module")
def models_api(server_factory: ServerFactory, server_env: dict[str, str], model_dir: Path) -> ApiServer:
    """A server (with its job worker) whose database is its own, with the session's model as the deployment's."""
    env = {
        **server_env,
        "MONGODB_DB": "user_models",
        "AUTOENCODER_MODEL_PATH": str(model_dir),
        "ANALYSIS_LEASE_SECONDS": LEASE_SECONDS,
    }
    return server_factory("models-api", env).wait_until_up()


@pytest.fixture(scope="module")
def limits_api(server_factory: ServerFactory, server_env: dict[str, str], model_dir: Path) -> ApiServer:
    """A server with small limits and no job worker, so trainings stay queued."""
    env = {
        **server_env,
        "MONGODB_DB": "model_limits",
        "AUTOENCODER_MODEL_PATH": str(model_dir),
        "JOB_WORKERS": "0",
        "MAX_MODELS_PER_USER": "2",
        "MAX_VERSIONS_PER_MODEL": "2",
        "MAX_TRAININGS_IN_PROGRESS_PER_USER": "4",
    }
    return server_factory("limits-api", env).wait_until_up()


@pytest.fixture
def owner(models_api: ApiServer) -> Account:
    return register(models_api)


@pytest.fixture
def client(models_api: ApiServer) -> Iterator[httpx.Client]:
    with models_api.client() as client:
        yield client


def _trained(client: httpx.Client, account: Account, dataset_id: str, name: str, **options: Any) -> dict[str, Any]:
    started = train(client, account, dataset_id, name, **{"epochs": 4, "seed": 1, **options})
    assert started.status_code == 202, started.text
    finished = wait_for_training(client, account, started.json()["training_id"])
    assert finished["status"] == "trained", finished
    return finished


def _analysed(client: httpx.Client, account: Account, frame: pd.DataFrame, body: dict[str, Any] | None = None):
    dataset_id = upload_ok(client, account, "to-analyse.csv", csv_bytes(frame))
    answer = client.post(f"/api/anomaly/datasets/{dataset_id}/analyze", headers=account.headers, json=body)
    assert answer.status_code == 202, answer.text
    status = wait_for_status(client, account, dataset_id)
    assert status["status"] == "analyzed", status
    return dataset_id, status


def _scores(client: httpx.Client, account: Account, dataset_id: str) -> pd.Series:
    answer = client.get(f"/api/anomaly/datasets/{dataset_id}/results", headers=account.headers)
    assert answer.status_code == 200, answer.text
    return pd.read_csv(io.BytesIO(answer.content))["anomaly_score"]


# --- the flow ------------------------------------------------------------------------------------------------


def test_train_follow_and_analyse_another_file_with_the_new_model(client: httpx.Client, owner: Account) -> None:
    normal_id = upload_ok(client, owner, "patients.csv", csv_bytes(patient_records(1500, seed=1)))
    refused = client.post(f"/api/anomaly/datasets/{normal_id}/analyze", headers=owner.headers)
    started = train(client, owner, normal_id, "patients", epochs=8, seed=3)
    seen: list[dict[str, Any]] = []
    trained = wait_for_training(client, owner, started.json()["training_id"], seen=seen)
    listed = client.get("/api/anomaly/models", headers=owner.headers).json()
    suspicious = patient_records(600, seed=2)
    suspicious.loc[[5, 50, 500], "glucose"] = [900.0, -300.0, 1200.0]
    suspicious_id, status = _analysed(client, owner, suspicious)
    anomalies = client.get(
        f"/api/anomaly/datasets/{suspicious_id}/anomalies", params={"limit": 10}, headers=owner.headers
    ).json()

    assert refused.status_code == 422 and "POST /api/anomaly/models" in refused.json()["detail"]
    assert started.status_code == 202, started.text
    assert started.json()["status"] == "queued" and started.json()["name"] == "patients"
    assert trained["status"] == "trained", trained
    epochs = [body["progress"]["epoch"] for body in seen if "epoch" in body["progress"]]
    assert epochs and epochs == sorted(epochs), f"no epoch progress seen: {seen[-1]}"
    assert len(trained["progress"]["loss"]) == trained["result"]["epochs_run"]
    assert trained["progress"]["percent"] == 100
    result = trained["result"]
    assert result["model"] == "patients" and result["version"] == 1 and result["threshold"] > 0
    assert "clinic" in result["features"] and result["validation"]["row_count"] == 1500
    assert result["validation"]["verdict"] in ("good", "high", "low") and "%" in result["validation"]["message"]
    assert set(trained["timings"]) >= {"load_seconds", "train_seconds", "total_seconds"}
    mine = [model for model in listed if model["name"] == "patients"]
    assert mine and mine[0]["kind"] == "user" and mine[0]["active_version"] == 1 and mine[0]["versions"] == [1]
    assert [model["kind"] for model in listed if model["name"] == "AutoEncoder"] == ["deployment"]
    assert status["model"] == "patients" and status["model_version_number"] == 1
    assert status["model_version"] == result["model_version"]
    assert {item["row"] for item in anomalies["items"][:3]} == {5, 50, 500}
    assert anomalies["items"][0]["top_features"][0]["column"] == "glucose"


def test_training_again_makes_a_new_active_version_and_older_ones_can_be_activated(
    client: httpx.Client, owner: Account
) -> None:
    first_id = upload_ok(client, owner, "january.csv", csv_bytes(patient_records(800, seed=4)))
    second_id = upload_ok(client, owner, "february.csv", csv_bytes(patient_records(900, seed=5)))
    first = _trained(client, owner, first_id, "clinic")
    second = _trained(client, owner, second_id, "clinic", epochs=3, encoding_dim=4, threshold_percentile=97)
    detail = client.get("/api/anomaly/models/clinic", headers=owner.headers).json()
    _, with_latest = _analysed(client, owner, patient_records(300, seed=6))
    activated = client.post("/api/anomaly/models/clinic/active", headers=owner.headers, json={"version": 1})
    _, with_first = _analysed(client, owner, patient_records(300, seed=6))
    report = client.get("/api/anomaly/models/clinic/report.png", headers=owner.headers)
    first_report = client.get("/api/anomaly/models/clinic/report.png", params={"version": 2}, headers=owner.headers)

    assert (first["result"]["version"], second["result"]["version"]) == (1, 2)
    assert detail["kind"] == "user" and detail["active_version"] == 2
    assert [version["version"] for version in detail["versions"]] == [1, 2]
    assert [version["active"] for version in detail["versions"]] == [False, True]
    lineage = detail["versions"][1]["lineage"]
    assert lineage["dataset_id"] == second_id and lineage["filename"] == "february.csv"
    assert lineage["sha256"] and lineage["rows_used"] == 900 and lineage["trained_by"] == owner.username
    assert lineage["parameters"]["encoding_dim"] == 4 and lineage["parameters"]["threshold_percentile"] == 97
    assert lineage["validation"]["row_count"] == 900 and lineage["timings"]["total_seconds"] > 0
    assert with_latest["model_version_number"] == 2 and with_latest["threshold_percentile"] == 97
    assert activated.status_code == 200 and activated.json()["active_version"] == 1
    assert with_first["model_version_number"] == 1 and with_first["threshold_percentile"] == 95
    assert report.status_code == 200 and report.content.startswith(b"\x89PNG")
    assert first_report.status_code == 200 and first_report.content.startswith(b"\x89PNG")


# --- bad input -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"name": "../evil"}, "name"),
        ({"name": ".hidden"}, "name"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": 201}, "epochs"),
        ({"encoding_dim": 0}, "encoding_dim"),
        ({"encoding_dim": 65}, "encoding_dim"),
        ({"threshold_percentile": 0}, "threshold_percentile"),
        ({"threshold_percentile": 100}, "threshold_percentile"),
        ({"name": "AutoEncoder"}, "'AutoEncoder' is the name of one of the deployment's models"),
        ({"exclude_columns": ["glucose", "no_such_column"]}, "no_such_column"),
        ({"exclude_columns": list(patient_records(1, seed=0).columns)}, "No usable feature column"),
    ],
)
def test_a_bad_training_request_answers_422_saying_what_is_allowed(
    client: httpx.Client, owner: Account, options: dict[str, Any], words: str
) -> None:
    dataset_id = upload_ok(client, owner, "patients.csv", csv_bytes(patient_records(200, seed=7)))
    answer = client.post(
        "/api/anomaly/models", headers=owner.headers, json={"dataset_id": dataset_id, "name": "ok", **options}
    )
    assert answer.status_code == 422, answer.text
    assert words in answer.json()["detail"]


def test_a_dataset_too_small_answers_422_with_the_clis_message(client: httpx.Client, owner: Account) -> None:
    dataset_id = upload_ok(client, owner, "tiny.csv", csv_bytes(patient_records(60, seed=8)))
    answer = train(client, owner, dataset_id, "tiny")
    assert answer.status_code == 422
    assert "has 60 usable rows; at least 100 normal rows are needed" in answer.json()["detail"]


def test_a_missing_or_foreign_dataset_answers_404(client: httpx.Client, owner: Account, models_api: ApiServer) -> None:
    stranger = register(models_api)
    foreign_id = upload_ok(client, stranger, "theirs.csv", csv_bytes(patient_records(200, seed=9)))
    assert train(client, owner, foreign_id, "theirs").status_code == 404
    assert train(client, owner, "0" * 24, "nothing").status_code == 404
    assert train(client, owner, "not-an-id", "nothing").status_code == 404


def test_another_users_model_and_training_are_not_found_and_never_used(
    client: httpx.Client, owner: Account, models_api: ApiServer
) -> None:
    dataset_id = upload_ok(client, owner, "patients.csv", csv_bytes(patient_records(500, seed=10)))
    training_id = _trained(client, owner, dataset_id, "private")["training_id"]
    stranger = register(models_api)
    theirs = upload_ok(client, stranger, "patients.csv", csv_bytes(patient_records(300, seed=11)))
    listed = client.get("/api/anomaly/models", headers=stranger.headers).json()
    named = client.post(f"/api/anomaly/datasets/{theirs}/analyze", headers=stranger.headers, json={"model": "private"})
    unnamed = client.post(f"/api/anomaly/datasets/{theirs}/analyze", headers=stranger.headers)
    assert "private" not in [model["name"] for model in listed]
    for path in ("/api/anomaly/models/private", "/api/anomaly/models/private/report.png",
                 "/api/anomaly/models/private/download", f"/api/anomaly/trainings/{training_id}"):  # fmt: skip
        assert client.get(path, headers=stranger.headers).status_code == 404, path
    assert client.delete(f"/api/anomaly/trainings/{training_id}", headers=stranger.headers).status_code == 404
    assert client.delete("/api/anomaly/models/private", headers=stranger.headers).status_code == 404
    assert (
        client.post("/api/anomaly/models/private/active", headers=stranger.headers, json={"version": 1}).status_code
        == 404
    )
    assert named.status_code == 422 and "'private'" in named.json()["detail"]
    assert unnamed.status_code == 422 and "private" not in unnamed.json()["detail"]


def test_the_deployments_models_are_read_only(client: httpx.Client, owner: Account) -> None:
    detail = client.get("/api/anomaly/models/AutoEncoder", headers=owner.headers)
    assert detail.status_code == 200 and detail.json()["kind"] == "deployment"
    assert client.delete("/api/anomaly/models/AutoEncoder", headers=owner.headers).status_code == 403
    activate = client.post("/api/anomaly/models/AutoEncoder/active", headers=owner.headers, json={"version": 1})
    assert activate.status_code == 403 and "read-only" in activate.json()["detail"]


# --- cancelling, one training at a time ----------------------------------------------------------------------


def test_one_training_runs_per_user_and_both_queued_and_running_ones_can_be_cancelled(
    client: httpx.Client, owner: Account
) -> None:
    dataset_id = upload_ok(client, owner, "big.csv", csv_bytes(patient_records(20_000, seed=12)))
    long_one = train(client, owner, dataset_id, "long", epochs=200).json()
    waiting = train(client, owner, dataset_id, "waiting", epochs=3).json()
    running = wait_for_training(client, owner, long_one["training_id"], until=("running",))
    still_queued = client.get(f"/api/anomaly/trainings/{waiting['training_id']}", headers=owner.headers).json()
    cancelled_queued = client.delete(f"/api/anomaly/trainings/{waiting['training_id']}", headers=owner.headers)
    # Once an epoch has passed, cancel the running one: it stops at its next epoch boundary.
    _wait_for_epoch(client, owner, long_one["training_id"])
    cancelling = client.delete(f"/api/anomaly/trainings/{long_one['training_id']}", headers=owner.headers)
    stopped = wait_for_training(client, owner, long_one["training_id"])
    again = client.delete(f"/api/anomaly/trainings/{long_one['training_id']}", headers=owner.headers)
    models = [model["name"] for model in client.get("/api/anomaly/models", headers=owner.headers).json()]

    assert running["status"] == "running" and still_queued["status"] == "queued"
    assert cancelled_queued.status_code == 200 and cancelled_queued.json()["status"] == "cancelled"
    assert cancelling.status_code == 200
    assert stopped["status"] == "cancelled" and "Cancelled" in stopped["error"], stopped
    assert stopped["progress"]["epoch"] < 200
    assert again.status_code == 409 and "nothing to cancel" in again.json()["detail"]
    assert "long" not in models and "waiting" not in models
    never = client.get(f"/api/anomaly/trainings/{waiting['training_id']}", headers=owner.headers).json()
    assert never["status"] == "cancelled" and never["started_at"] is None and never["attempts"] == 0


def _wait_for_epoch(client: httpx.Client, account: Account, training_id: str) -> None:
    seen: list[dict[str, Any]] = []
    while not seen or "epoch" not in seen[-1]["progress"]:
        wait_for_training(client, account, training_id, until=("running", "trained", "failed", "cancelled"), seen=seen)
        assert seen[-1]["status"] == "running", seen[-1]


# --- versions: deleting, downloading -------------------------------------------------------------------------


def test_deleting_versions_keeps_done_analyses_and_refuses_the_active_one(client: httpx.Client, owner: Account) -> None:
    dataset_id = upload_ok(client, owner, "patients.csv", csv_bytes(patient_records(600, seed=13)))
    _trained(client, owner, dataset_id, "kept")
    _trained(client, owner, dataset_id, "kept")
    analysed_id, status = _analysed(client, owner, patient_records(300, seed=14))
    active = client.delete("/api/anomaly/models/kept/versions/2", headers=owner.headers)
    older = client.delete("/api/anomaly/models/kept/versions/1", headers=owner.headers)
    detail = client.get("/api/anomaly/models/kept", headers=owner.headers).json()
    whole = client.delete("/api/anomaly/models/kept", headers=owner.headers)
    after = client.get("/api/anomaly/models/kept", headers=owner.headers)
    anomalies = client.get(f"/api/anomaly/datasets/{analysed_id}/anomalies", headers=owner.headers)
    status_after = client.get(f"/api/anomaly/datasets/{analysed_id}/status", headers=owner.headers).json()

    assert active.status_code == 409 and "active version" in active.json()["detail"]
    assert older.status_code == 204
    assert [version["version"] for version in detail["versions"]] == [2]
    assert whole.status_code == 204 and after.status_code == 404
    assert anomalies.status_code == 200 and anomalies.json()["total"] == status["anomaly_count"]
    assert status_after["model"] == "kept" and status_after["model_version_number"] == 2


def test_a_version_an_analysis_waits_for_cannot_be_deleted(
    client: httpx.Client, owner: Account, models_api: ApiServer
) -> None:
    dataset_id = upload_ok(client, owner, "patients.csv", csv_bytes(patient_records(500, seed=15)))
    _trained(client, owner, dataset_id, "busy")
    _trained(client, owner, dataset_id, "busy")
    client.post("/api/anomaly/models/busy/active", headers=owner.headers, json={"version": 1})
    workers = models_api.worker_pids()
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)  # the analysis stays queued while its version is asked to go
    try:
        waiting_id = upload_ok(client, owner, "waiting.csv", csv_bytes(patient_records(200, seed=16)))
        assert client.post(f"/api/anomaly/datasets/{waiting_id}/analyze", headers=owner.headers).status_code == 202
        client.post("/api/anomaly/models/busy/active", headers=owner.headers, json={"version": 2})
        refused = client.delete("/api/anomaly/models/busy/versions/1", headers=owner.headers)
        whole = client.delete("/api/anomaly/models/busy", headers=owner.headers)
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    finished = wait_for_status(client, owner, waiting_id)
    assert refused.status_code == 409 and "wait for it to finish" in refused.json()["detail"]
    assert whole.status_code == 409
    assert finished["status"] == "analyzed" and finished["model_version_number"] == 1
    assert client.delete("/api/anomaly/models/busy/versions/1", headers=owner.headers).status_code == 204


def test_a_downloaded_version_works_with_the_python_api_the_cli_and_models_dir(
    client: httpx.Client,
    owner: Account,
    server_factory: ServerFactory,
    server_env: dict[str, str],
    tmp_path: Path,
) -> None:
    dataset_id = upload_ok(client, owner, "patients.csv", csv_bytes(patient_records(800, seed=17)))
    _trained(client, owner, dataset_id, "portable")
    checked = patient_records(400, seed=18)
    checked.loc[3, "bmi"] = 400.0
    analysed_id, _ = _analysed(client, owner, checked)
    api_scores = _scores(client, owner, analysed_id)
    download = client.get("/api/anomaly/models/portable/download", headers=owner.headers)
    assert download.status_code == 200 and download.headers["content-type"] == "application/zip"
    folder = tmp_path / "Model" / "portable"
    with zipfile.ZipFile(io.BytesIO(download.content)) as archive:
        assert sorted(archive.namelist()) == ["autoencoder.h5", "metadata.pkl", "training_report.png"]
        archive.extractall(folder)

    detector = TabularAnomalyDetector.load(folder)
    assert detector.decision_function(checked).tolist() == pytest.approx(api_scores.tolist(), rel=1e-9)

    env = {**server_env, "MONGODB_DB": "downloaded_models", "AUTOENCODER_MODEL_PATH": str(tmp_path / "Model" / "none")}
    served = server_factory("downloaded-models-api", {**env, "MODELS_DIR": str(tmp_path / "Model")}).wait_until_up()
    someone = register(served)
    with served.client() as other:
        served_id, status = _analysed(other, someone, checked, {"model": "portable"})
        assert status["model"] == "portable"
        assert _scores(other, someone, served_id).tolist() == pytest.approx(api_scores.tolist(), rel=1e-9)

    data = tmp_path / "retrain.csv"
    patient_records(300, seed=19).to_csv(data, index=False)
    cli = subprocess.run(
        [sys.executable, "train_autoencoder_model.py", str(data), "--output-dir", str(folder), "--epochs", "2"],
        cwd=BACKEND_DIR, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert TabularAnomalyDetector.load(folder).model_info["version"] != detector.model_info["version"]


# --- limits --------------------------------------------------------------------------------------------------


def test_models_versions_and_trainings_in_progress_are_bounded_per_user(limits_api: ApiServer) -> None:
    account = register(limits_api)
    with limits_api.client() as client:
        dataset_id = upload_ok(client, account, "patients.csv", csv_bytes(patient_records(200, seed=20)))
        answers = [train(client, account, dataset_id, name) for name in ("a", "a", "a", "b", "c")]
        more = [train(client, account, dataset_id, "b") for _ in range(3)]
    statuses = [answer.status_code for answer in answers]
    assert statuses == [202, 202, 409, 202, 409]
    assert "DELETE /api/anomaly/models/a/versions/" in answers[2].json()["detail"]
    assert (
        "delete one" in answers[4].json()["detail"]
        and "DELETE /api/anomaly/models/{name}" in answers[4].json()["detail"]
    )
    assert [answer.status_code for answer in more] == [202, 429, 429]
    assert more[1].headers["retry-after"] and "cancel one" in more[1].json()["detail"]


# --- faults --------------------------------------------------------------------------------------------------


def test_a_dataset_deleted_while_its_model_trains_fails_the_training_and_keeps_nothing(
    client: httpx.Client, owner: Account
) -> None:
    dataset_id = upload_ok(client, owner, "doomed.csv", csv_bytes(patient_records(20_000, seed=21)))
    started = train(client, owner, dataset_id, "doomed", epochs=200).json()
    _wait_for_epoch(client, owner, started["training_id"])
    assert client.delete(f"/api/anomaly/datasets/{dataset_id}", headers=owner.headers).status_code == 204
    ended = wait_for_training(client, owner, started["training_id"])
    assert ended["status"] == "failed" and "dataset was deleted" in ended["error"]
    assert client.get("/api/anomaly/models/doomed", headers=owner.headers).status_code == 404


def test_a_worker_killed_mid_training_is_replaced_and_the_training_completes(
    client: httpx.Client, owner: Account, models_api: ApiServer
) -> None:
    dataset_id = upload_ok(client, owner, "patients.csv", csv_bytes(patient_records(6000, seed=22)))
    started = train(client, owner, dataset_id, "survivor", epochs=30, seed=2).json()
    _wait_for_epoch(client, owner, started["training_id"])
    for pid in models_api.worker_pids():
        os.kill(pid, signal.SIGKILL)
    ended = wait_for_training(client, owner, started["training_id"])
    detail = client.get("/api/anomaly/models/survivor", headers=owner.headers).json()
    assert ended["status"] == "trained" and ended["attempts"] == 2, ended
    assert [version["version"] for version in detail["versions"]] == [1]


def test_two_trainings_of_one_name_at_once_make_two_whole_versions(
    client: httpx.Client, owner: Account, tmp_path: Path
) -> None:
    dataset_id = upload_ok(client, owner, "patients.csv", csv_bytes(patient_records(500, seed=23)))
    with ThreadPoolExecutor(2) as pool:
        started = list(pool.map(lambda seed: train(client, owner, dataset_id, "twins", epochs=3, seed=seed), (1, 2)))
    ended = [wait_for_training(client, owner, answer.json()["training_id"]) for answer in started]
    detail = client.get("/api/anomaly/models/twins", headers=owner.headers).json()
    assert [training["status"] for training in ended] == ["trained", "trained"]
    assert sorted(training["result"]["version"] for training in ended) == [1, 2]
    assert [version["version"] for version in detail["versions"]] == [1, 2]
    for version in (1, 2):
        answer = client.get("/api/anomaly/models/twins/download", params={"version": version}, headers=owner.headers)
        folder = tmp_path / f"v{version}"
        with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
            archive.extractall(folder)
        loaded = TabularAnomalyDetector.load(folder)
        assert loaded.model_info["version"] == detail["versions"][version - 1]["content_hash"]
