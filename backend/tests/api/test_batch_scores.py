"""Batch scoring gives every row the score the API gives it: the same file through both, compared row by row.

Here rather than under ``tests/batch`` because it needs this package's real server and session model; the batch
command starts its own local cluster of two workers (``--workers 2``), as a user's first run would.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from app.utils.sample_data import inject_anomalies, make_normal_transactions
from tests.api.support import BACKEND_DIR, Account, ApiServer, csv_bytes, upload_ok, wait_for_status


def test_batch_scores_equal_the_apis_for_the_same_rows(
    api: ApiServer, account: Account, model_dir: Path, tmp_path: Path
) -> None:
    frame, _ = inject_anomalies(make_normal_transactions(1200, seed=21), fraction=0.03, seed=21)
    (tmp_path / "rows.csv").write_bytes(csv_bytes(frame))
    frame.to_parquet(tmp_path / "rows.parquet", row_group_size=250)

    with api.client() as client:
        dataset_id = upload_ok(client, account, "rows.csv", csv_bytes(frame))
        assert client.post(f"/api/anomaly/datasets/{dataset_id}/analyze", headers=account.headers).status_code == 202
        status = wait_for_status(client, account, dataset_id)
        assert status["status"] == "analyzed", status
        download = client.get(f"/api/anomaly/datasets/{dataset_id}/results?format=csv", headers=account.headers)
    assert download.status_code == 200, download.text
    from_api = pd.read_csv(io.BytesIO(download.content))

    completed = subprocess.run(
        [sys.executable, "-m", "app.batch", "score", "--model", str(model_dir), "--workers", "2",
         "--input", str(tmp_path / "rows.csv"), str(tmp_path / "rows.parquet"), "--output", str(tmp_path / "scored"),
         "--partition-rows", "100"],
        cwd=BACKEND_DIR, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    batch = pd.read_parquet(tmp_path / "scored")
    assert len(batch) == 2 * len(frame)

    summary = json.loads((tmp_path / "scored" / "_summary.json").read_text())
    assert (summary["threshold"], summary["model_version"]) == (status["threshold"], status["model_version"])
    for copy in (batch.iloc[: len(frame)], batch.iloc[len(frame) :]):  # the CSV's rows, then the Parquet's
        np.testing.assert_allclose(copy["anomaly_score"], from_api["anomaly_score"], rtol=1e-9, atol=0)
        assert (copy["is_anomaly"].to_numpy() == from_api["is_anomaly"].to_numpy()).all()
        assert (copy["top_feature"].fillna("").to_numpy() == from_api["top_feature"].fillna("").to_numpy()).all()
    assert int(batch["is_anomaly"][: len(frame)].sum()) == status["anomaly_count"] > 0
