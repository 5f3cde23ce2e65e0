"""Shared fixtures: one small trained model per test session (training is the slow part)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from app.utils.anomaly_detector import TabularAnomalyDetector  # noqa: E402
from app.utils.sample_data import make_normal_transactions  # noqa: E402

TRAINING_ROWS = 1500
EPOCHS = 8


@pytest.fixture(scope="session")
def training_frame() -> pd.DataFrame:
    """Normal, seed-like rows: id, timestamp, two text columns, numbers on different scales."""
    return make_normal_transactions(TRAINING_ROWS, seed=0)


@pytest.fixture(scope="session")
def trained_detector(training_frame: pd.DataFrame) -> TabularAnomalyDetector:
    detector = TabularAnomalyDetector(encoding_dim=8, threshold_percentile=95, random_state=0)
    detector.train(training_frame, epochs=EPOCHS, batch_size=64, validation_split=0.2, verbose=0)
    return detector


@pytest.fixture(scope="session")
def saved_model_dir(trained_detector: TabularAnomalyDetector, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_detector.save(tmp_path_factory.mktemp("models") / "AutoEncoder")


@pytest.fixture
def fresh_rows() -> pd.DataFrame:
    """Normal rows the model has not seen."""
    return make_normal_transactions(400, seed=7)
