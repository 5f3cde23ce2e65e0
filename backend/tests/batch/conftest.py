"""Fixtures for batch scoring: one small model and one real two-worker Dask cluster, shared by the session.

The command runs as users run it (``python -m app.batch score`` in a subprocess from ``backend/``), against
the shared cluster with ``--scheduler`` so each test does not pay for starting workers and TensorFlow.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.utils.sample_data import make_normal_transactions
from tests.batch.support import BatchCommand


@pytest.fixture(scope="session")
def batch_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MODELS_DIR holding one small model, ``AutoEncoder``, trained once per session."""
    from app.utils.anomaly_detector import TabularAnomalyDetector

    root = tmp_path_factory.mktemp("batch-models")
    detector = TabularAnomalyDetector(encoding_dim=8, threshold_percentile=95, random_state=0)
    detector.train(make_normal_transactions(2000, seed=1), epochs=5, batch_size=64, validation_split=0.2, verbose=0)
    detector.save(root / "AutoEncoder", training_report=False)
    return root


@pytest.fixture(scope="session")
def scheduler_address() -> Iterator[str]:
    """A local cluster of two single-threaded worker processes on the loopback interface."""
    from distributed import LocalCluster

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.CRITICAL,
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture
def batch(batch_models: Path) -> BatchCommand:
    """The command, with MODELS_DIR and AUTOENCODER_MODEL_PATH pointing at the session's model."""
    return BatchCommand(batch_models)
