"""An analysis's memory and stored documents are bounded whatever the data: a row of 17 MB, a million anomalies.

The job worker's peak memory (VmHWM in /proc, reset before each analysis) stays within a budget, the stored
pages of anomalies stay under MongoDB's 16 MB document limit, and the answers are complete and correct.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from bson import ObjectId
from pymongo import MongoClient

from tests.api.conftest import ServerFactory
from tests.api.support import Account, ApiServer, register, upload_ok, wait_for_status

DATABASE = "analysis_bounds"
WORKER_MEMORY_BUDGET = 1536 * 2**20
DOCUMENT_LIMIT = 16 * 2**20


def _ledger(n_rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"amount": rng.lognormal(3, 0.5, n_rows).round(2), "kind": rng.choice(["card", "cash", "wire"], n_rows)}
    )


@pytest.fixture(scope="module")
def ledger_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from app.utils.anomaly_detector import TabularAnomalyDetector

    folder = tmp_path_factory.mktemp("ledger-model") / "AutoEncoder"
    detector = TabularAnomalyDetector(encoding_dim=2, random_state=0)
    detector.train(_ledger(2000, seed=1), epochs=3, verbose=0)
    detector.save(folder, training_report=False)
    return folder


@pytest.fixture(scope="module")
def bounds_api(server_factory: ServerFactory, server_env: dict[str, str], ledger_model: Path) -> ApiServer:
    env = {
        **server_env,
        "MONGODB_DB": DATABASE,
        "AUTOENCODER_MODEL_PATH": str(ledger_model),
        "MAX_UPLOAD_MB": "60",
        "MAX_STORAGE_MB_PER_USER": "500",
    }
    return server_factory("bounds-api", env).wait_until_up()


@pytest.fixture(scope="module")
def mongo(database_url: str) -> Iterator[Any]:
    client: MongoClient[dict[str, Any]] = MongoClient(database_url)
    yield client[DATABASE]
    client.close()


class WorkerPeak:
    """How much the server's job worker's peak memory grew while the block ran."""

    def __init__(self, server: ApiServer) -> None:
        (self.pid,) = server.worker_pids()

    def _field(self, name: str) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith(f"{name}:"))) * 1024

    def __enter__(self) -> WorkerPeak:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # VmHWM starts again from the current RSS
        self.baseline = self._field("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.growth = self._field("VmHWM") - self.baseline


def _analysed(server: ApiServer, account: Account, content: bytes, **body: Any) -> tuple[str, dict[str, Any]]:
    with server.client() as client:
        dataset_id = upload_ok(client, account, "ledger.csv", content)
        answer = client.post(f"/api/anomaly/datasets/{dataset_id}/analyze", headers=account.headers, json=body or None)
        assert answer.status_code == 202, answer.text
        status = wait_for_status(client, account, dataset_id, timeout=600)
    assert status["status"] == "analyzed", status
    return dataset_id, status


def _largest_page(mongo: Any, session_id: str) -> int:
    sizes = mongo["anomaly_pages"].aggregate(
        [{"$match": {"session_id": ObjectId(session_id)}}, {"$project": {"size": {"$bsonSize": "$$ROOT"}}}]
    )
    return max(document["size"] for document in sizes)


def test_a_17_megabyte_anomalous_row_is_stored_cut_and_downloaded_whole(bounds_api: ApiServer, mongo: Any) -> None:
    account = register(bounds_api)
    frame = _ledger(300, seed=2)
    for index in range(17):
        frame[f"note{index}"] = "ok"
        frame.loc[7, f"note{index}"] = chr(ord("a") + index) * (1 << 20)
    frame.loc[7, "amount"] = 1e7  # the huge row is an anomaly, so it is stored in the pages
    dataset_id, status = _analysed(bounds_api, account, frame.to_csv(index=False).encode())
    with bounds_api.client() as client:
        items = client.get(f"/api/anomaly/datasets/{dataset_id}/anomalies", headers=account.headers).json()["items"]
        results = client.get(f"/api/anomaly/datasets/{dataset_id}/results", headers=account.headers)
    huge = next(item for item in items if item["row"] == 7)
    assert all(len(huge["values"][f"note{index}"]) < 1000 for index in range(17))
    assert "1,048,576 characters" in huge["values"]["note0"]
    assert _largest_page(mongo, status["session_id"]) < DOCUMENT_LIMIT
    downloaded = pd.read_csv(io.BytesIO(results.content), usecols=["note3"])
    assert downloaded["note3"][7] == "d" * (1 << 20)


def test_a_million_anomalies_are_stored_in_bounded_memory_and_read_back_complete(
    bounds_api: ApiServer, mongo: Any
) -> None:
    account = register(bounds_api)
    content = _ledger(1_000_000, seed=3).to_csv(index=False).encode()
    with WorkerPeak(bounds_api) as peak:
        dataset_id, status = _analysed(bounds_api, account, content, threshold_percentile=0.1)
    total = status["anomaly_count"]
    pages = list(
        mongo["anomaly_pages"]
        .find({"session_id": ObjectId(status["session_id"])}, {"first": 1, "count": {"$size": "$items"}})
        .sort("first", 1)
    )
    with bounds_api.client() as client:

        def page(offset: int) -> dict[str, Any]:
            return client.get(
                f"/api/anomaly/datasets/{dataset_id}/anomalies",
                params={"limit": 1000, "offset": offset},
                headers=account.headers,
            ).json()

        first, middle, last = page(0), page(total // 2), page(total - 10)
    assert total > 990_000, status
    assert peak.growth < WORKER_MEMORY_BUDGET, f"the worker grew by {peak.growth / 2**20:.0f} MB"
    # The stored pages cover every rank once, in order.
    assert pages[0]["first"] == 0
    assert all(
        later["first"] == earlier["first"] + earlier["count"] for earlier, later in zip(pages, pages[1:], strict=False)
    )
    assert pages[-1]["first"] + pages[-1]["count"] == total
    assert first["total"] == total and len(first["items"]) == 1000 and len(last["items"]) == 10
    scores = [item["score"] for item in first["items"] + middle["items"] + last["items"]]
    assert scores == sorted(scores, reverse=True)
    assert all(item["top_features"] for item in first["items"][:10])
