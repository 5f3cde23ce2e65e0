"""Writes this folder: a model saved by the version before drift statistics, and what that version computed.

Run once, at commit a334aca (the last commit before drift statistics), from ``backend/``:

    ../.venv/bin/python tests/detector/model_before_drift/make_fixture.py

Re-running it with a later version would record that version's output instead: never regenerate these files.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
FOLDER = Path(__file__).resolve().parent
sys.path.insert(0, str(FOLDER.parent))

from mixed_tables import mixed_scoring_frame, mixed_training_frame  # noqa: E402

from app.utils.anomaly_detector import TabularAnomalyDetector  # noqa: E402
from app.utils.table_reader import read_table  # noqa: E402


def main() -> None:
    detector = TabularAnomalyDetector(encoding_dim=4, threshold_percentile=95, random_state=0)
    detector.train(mixed_training_frame(), epochs=2, verbose=0)
    detector.save(FOLDER / "AutoEncoder", training_report=False)
    frame = mixed_scoring_frame()
    csv = io.BytesIO()
    frame.to_csv(csv, index=False)
    from_csv = read_table(csv.getvalue(), "rows.csv")
    np.save(FOLDER / "encoded.npy", detector.preprocessor_.transform(frame))
    np.save(FOLDER / "encoded_from_csv.npy", detector.preprocessor_.transform(from_csv))
    np.save(FOLDER / "scores.npy", detector.decision_function(frame))
    np.save(FOLDER / "scores_from_csv.npy", detector.decision_function(from_csv))


if __name__ == "__main__":
    main()
