"""The model card: everything metadata.pkl says, read without TensorFlow, and the same facts the detector gives."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.core.config import BACKEND_DIR
from app.utils import model_store
from app.utils.anomaly_detector import ColumnMismatchError, TabularAnomalyDetector
from app.utils.model_card import ModelCard
from tests.detector.mixed_tables import MODEL_BEFORE_DRIFT

CARD_WITHOUT_TENSORFLOW = """
import json, sys
from app.utils.model_card import ModelCard

card = ModelCard.load(sys.argv[1])
print(json.dumps({
    "info": card.info,
    "threshold_at_90": card.threshold_at(90),
    "missing": card.missing_columns(["region"]),
    "drift": card.drift_accumulator().report().verdict,
    "loaded": sorted(name for name in ("tensorflow", "keras") if name in sys.modules),
}))
"""


def test_a_model_card_is_read_without_importing_tensorflow(saved_model_dir: Path):
    run = subprocess.run(
        [sys.executable, "-c", CARD_WITHOUT_TENSORFLOW, str(saved_model_dir)],
        cwd=BACKEND_DIR, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    answer = json.loads(run.stdout)
    detector = TabularAnomalyDetector.load(saved_model_dir)

    assert answer["loaded"] == []
    assert answer["info"] == json.loads(json.dumps(detector.model_info))
    assert answer["threshold_at_90"] == detector.threshold_at(90)
    assert answer["missing"] == [name for name in detector.feature_names if name != "region"]
    assert answer["drift"] == "unavailable"  # nothing scored yet


def test_the_card_holds_what_the_detector_was_trained_with(
    trained_detector: TabularAnomalyDetector, saved_model_dir: Path
):
    card = ModelCard.load(saved_model_dir)

    assert card.feature_names == trained_detector.feature_names
    assert card.dropped_columns == {"id": "identifier (unique per row)"}
    assert card.threshold == trained_detector.threshold
    assert card.threshold_percentile == 95
    assert card.threshold_at(95) == pytest.approx(card.threshold)
    assert card.training_rows == 1500 and card.trained_at is not None
    assert card.version == model_store.model_version(saved_model_dir)
    assert set(card.library_versions) >= {"tensorflow", "keras", "scikit-learn"}
    assert card.drift_reference is not None and card.drift_reference.rows == 1500
    assert card.check_columns([*card.feature_names, "note"]) == ["note"]
    with pytest.raises(ColumnMismatchError, match="Dataset columns don't match model: missing value1"):
        card.check_columns([name for name in card.feature_names if name != "value1"])
    with pytest.raises(ValueError, match="between 0 and 100"):
        card.threshold_at(100)


def test_a_card_of_a_model_saved_before_drift_statistics_has_no_drift_reference():
    card = ModelCard.load(MODEL_BEFORE_DRIFT / "AutoEncoder")

    assert card.drift_reference is None
    assert card.drift_accumulator().report().reason == (
        "the model was trained before drift statistics were recorded: retrain it to get drift reports"
    )


def test_a_card_needs_both_model_files(saved_model_dir: Path, tmp_path: Path):
    folder = tmp_path / "AutoEncoder"
    shutil.copytree(saved_model_dir, folder)
    (folder / "autoencoder.h5").unlink()

    with pytest.raises(FileNotFoundError, match=r"No such file or directory: '.*AutoEncoder/autoencoder.h5'"):
        ModelCard.load(folder)


def test_a_metadata_format_this_version_does_not_read_asks_to_retrain(saved_model_dir: Path, tmp_path: Path):
    folder = tmp_path / "AutoEncoder"
    shutil.copytree(saved_model_dir, folder)
    metadata = model_store.load_metadata(folder / "metadata.pkl")
    metadata["format"] = 99
    model_store.dump_metadata(metadata, folder / "metadata.pkl")

    with pytest.raises(ValueError, match="metadata format 99.*retrain the model"):
        ModelCard.load(folder)
