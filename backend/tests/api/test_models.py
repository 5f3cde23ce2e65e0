"""Several models on one server: each dataset goes to the model its columns fit, and switched models are
picked up without a restart (the seed's symlink flow, and a model retrained in place)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from app.utils import model_store
from app.utils.sample_data import make_normal_transactions
from tests.api.conftest import ServerFactory
from tests.api.support import Account, ApiServer, csv_bytes, register, upload_ok, wait_for_status

SWITCH_SECONDS = 30


def _transactions(n_rows: int, seed: int) -> pd.DataFrame:
    """The default model's schema: timestamp, region, channel, value1..value3 (and an id it ignores)."""
    return make_normal_transactions(n_rows, seed=seed, n_columns=7)


def _finance(n_rows: int, seed: int) -> pd.DataFrame:
    frame = make_normal_transactions(n_rows, seed=seed, n_columns=6)
    return frame.rename(columns={"value1": "amount", "value2": "fee"})[["amount", "fee", "region"]]


def _logistics(n_rows: int, seed: int) -> pd.DataFrame:
    frame = make_normal_transactions(n_rows, seed=seed, n_columns=6)
    return frame.rename(columns={"value1": "weight", "value2": "distance"})[["weight", "distance", "channel"]]


def _train(frame: pd.DataFrame, directory: Path, seed: int) -> str:
    """Train a tiny model into ``directory``; its version."""
    from app.utils.anomaly_detector import TabularAnomalyDetector

    detector = TabularAnomalyDetector(encoding_dim=4, random_state=seed)
    detector.train(frame, epochs=2, batch_size=64, verbose=0)
    detector.save(directory, training_report=False)
    return model_store.model_version(directory)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Model/ as the seed lays it out, plus two models for other schemas:

    AutoEncoder_v1, AutoEncoder_v2 (same schema), AutoEncoder_active -> AutoEncoder_v1 (the default),
    finance (amount, fee, region) and logistics (weight, distance, channel).
    """
    root = tmp_path_factory.mktemp("several-models")
    _train(_transactions(300, seed=40), root / "AutoEncoder_v1", seed=1)
    _train(_transactions(300, seed=41), root / "AutoEncoder_v2", seed=2)
    (root / "AutoEncoder_active").symlink_to("AutoEncoder_v1")
    _train(_finance(300, seed=42), root / "finance", seed=3)
    _train(_logistics(300, seed=43), root / "logistics", seed=4)
    return root


@pytest.fixture(scope="module")
def several_models_api(server_factory: ServerFactory, server_env: dict[str, str], models_dir: Path) -> ApiServer:
    env = {
        **server_env,
        "AUTOENCODER_MODEL_PATH": str(models_dir / "AutoEncoder_active"),
        "MODEL_CHECK_SECONDS": "0.5",
    }
    return server_factory("several-models-api", env).wait_until_up()


@pytest.fixture
def user(several_models_api: ApiServer) -> Account:
    return register(several_models_api)


def _analyze(client: httpx.Client, account: Account, frame: pd.DataFrame, body: dict[str, Any] | None = None) -> Any:
    dataset_id = upload_ok(client, account, "test.csv", csv_bytes(frame))
    return dataset_id, client.post(f"/api/anomaly/datasets/{dataset_id}/analyze", headers=account.headers, json=body)


def _models(client: httpx.Client, account: Account) -> dict[str, dict[str, Any]]:
    answer = client.get("/api/anomaly/models", headers=account.headers)
    assert answer.status_code == 200, answer.text
    return {model["name"]: model for model in answer.json()}


def _wait_for_version(client: httpx.Client, account: Account, name: str, version: str) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + SWITCH_SECONDS
    while (models := _models(client, account)).get(name, {}).get("version") != version:
        assert time.monotonic() < deadline, f"{name} still at {models.get(name)} after {SWITCH_SECONDS} s"
        time.sleep(0.2)
    return models


def test_every_model_folder_is_listed_once(several_models_api: ApiServer, user: Account, models_dir: Path) -> None:
    with several_models_api.client() as client:
        models = client.get("/api/anomaly/models", headers=user.headers).json()
    # AutoEncoder_v1 is served as AutoEncoder_active, the folder the link leads to.
    assert [model["name"] for model in models] == ["AutoEncoder_active", "AutoEncoder_v2", "finance", "logistics"]
    default = models[0]
    assert default["default"] is True
    assert default["version"] == model_store.model_version(models_dir / "AutoEncoder_v1")
    assert set(models[2]["features"]) == {"amount", "fee", "region"}
    assert all(model["trained_at"] and model["threshold"] > 0 for model in models)


def test_two_schemas_go_to_two_models(several_models_api: ApiServer, user: Account) -> None:
    with several_models_api.client() as client:
        finance_id, finance = _analyze(client, user, _finance(200, seed=44))
        logistics_id, logistics = _analyze(client, user, _logistics(200, seed=45))
        assert finance.status_code == 202 and logistics.status_code == 202
        finance_status = wait_for_status(client, user, finance_id)
        logistics_status = wait_for_status(client, user, logistics_id)
        models = _models(client, user)
    assert finance_status["status"] == logistics_status["status"] == "analyzed"
    assert finance_status["model"] == "finance"
    assert finance_status["model_version"] == models["finance"]["version"]
    assert logistics_status["model"] == "logistics"
    assert logistics_status["model_version"] == models["logistics"]["version"]


def test_the_default_model_is_preferred_when_it_fits(several_models_api: ApiServer, user: Account) -> None:
    """AutoEncoder_v2 fits the same columns, but the default is taken without asking."""
    with several_models_api.client() as client:
        dataset_id, answer = _analyze(client, user, _transactions(150, seed=46))
        status = wait_for_status(client, user, dataset_id)
    assert answer.status_code == 202
    assert status["model"] == "AutoEncoder_active"


def test_a_named_model_is_used(several_models_api: ApiServer, user: Account) -> None:
    with several_models_api.client() as client:
        dataset_id, answer = _analyze(client, user, _transactions(150, seed=47), {"model": "AutoEncoder_v2"})
        status = wait_for_status(client, user, dataset_id)
    assert answer.status_code == 202
    assert status["model"] == "AutoEncoder_v2"


def test_several_fitting_models_answer_422_naming_them(several_models_api: ApiServer, user: Account) -> None:
    both = pd.concat([_finance(150, seed=48), _logistics(150, seed=49)], axis=1)
    with several_models_api.client() as client:
        dataset_id, answer = _analyze(client, user, both)
        named = client.post(
            f"/api/anomaly/datasets/{dataset_id}/analyze", headers=user.headers, json={"model": "logistics"}
        )
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert "finance" in detail and "logistics" in detail and '"model"' in detail
    assert "AutoEncoder" not in detail
    assert named.status_code == 202


def test_no_fitting_model_answers_422_naming_each_candidate_and_its_missing_columns(
    several_models_api: ApiServer, user: Account
) -> None:
    frame = pd.DataFrame({"x": range(150), "amount": [float(value % 7) for value in range(150)]})
    with several_models_api.client() as client:
        _, answer = _analyze(client, user, frame)
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert "Dataset columns don't match model" in detail
    assert "finance is missing fee, region" in detail
    assert "logistics is missing weight, distance, channel" in detail
    assert "AutoEncoder_active is missing" in detail and "AutoEncoder_v2 is missing" in detail


def test_an_unknown_model_answers_422_naming_the_loaded_ones(several_models_api: ApiServer, user: Account) -> None:
    with several_models_api.client() as client:
        _, answer = _analyze(client, user, _finance(120, seed=50), {"model": "shipping"})
    assert answer.status_code == 422
    assert "finance" in answer.json()["detail"] and "logistics" in answer.json()["detail"]


def test_a_switched_symlink_is_picked_up_without_restart(
    several_models_api: ApiServer, user: Account, models_dir: Path
) -> None:
    """The seed's versioning flow: ``ln -sfn AutoEncoder_v2 Model/AutoEncoder_active``, no restart."""
    v1 = model_store.model_version(models_dir / "AutoEncoder_v1")
    v2 = model_store.model_version(models_dir / "AutoEncoder_v2")
    frame = _transactions(200, seed=51)
    with several_models_api.client() as client:
        dataset_id, _ = _analyze(client, user, frame)
        before = wait_for_status(client, user, dataset_id)
        subprocess.run(["ln", "-sfn", "AutoEncoder_v2", "AutoEncoder_active"], cwd=models_dir, check=True)
        models = _wait_for_version(client, user, "AutoEncoder_active", v2)
        again = client.post(f"/api/anomaly/datasets/{dataset_id}/analyze", headers=user.headers).json()
        after = wait_for_status(client, user, dataset_id)
    assert before["model_version"] == v1
    assert again["reused"] is False  # another model version is another analysis
    assert after["model"] == "AutoEncoder_active" and after["model_version"] == v2
    # v1 is now a model of its own; v2 is served once, as the default.
    assert sorted(models) == ["AutoEncoder_active", "AutoEncoder_v1", "finance", "logistics"]
    assert models["AutoEncoder_v1"]["version"] == v1


def test_a_model_retrained_in_place_is_picked_up_without_restart(
    several_models_api: ApiServer, user: Account, models_dir: Path
) -> None:
    with several_models_api.client() as client:
        old = _models(client, user)["finance"]["version"]
        new = _train(_finance(300, seed=52), models_dir / "finance", seed=5)
        assert new != old
        _wait_for_version(client, user, "finance", new)
        dataset_id, answer = _analyze(client, user, _finance(150, seed=53))
        status = wait_for_status(client, user, dataset_id)
    assert answer.status_code == 202
    assert status["model"] == "finance" and status["model_version"] == new
