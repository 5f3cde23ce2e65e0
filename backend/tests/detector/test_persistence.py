"""Saving and loading: atomic writes, a refused tampered pickle, version warnings, re-thresholding, old models."""

from __future__ import annotations

import io
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.utils import model_store
from app.utils.anomaly_detector import TabularAnomalyDetector
from app.utils.sample_data import make_normal_transactions
from app.utils.table_reader import read_table
from tests.detector.mixed_tables import MODEL_BEFORE_DRIFT, mixed_scoring_frame


class _RunsCode:
    """A pickle payload that would create a file if unpickled with the standard unpickler."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_tampered_metadata_pickle_is_refused_and_runs_no_code(saved_model_dir: Path, tmp_path: Path):
    tampered = tmp_path / "AutoEncoder"
    shutil.copytree(saved_model_dir, tampered)
    marker = tmp_path / "pwned"
    metadata = model_store.load_metadata(tampered / "metadata.pkl")
    metadata["history"] = _RunsCode(marker)
    (tampered / "metadata.pkl").write_bytes(pickle.dumps(metadata))

    with pytest.raises(pickle.UnpicklingError, match="Refusing to load metadata.pkl"):
        TabularAnomalyDetector.load(tampered)
    assert not marker.exists()


def test_a_failed_save_leaves_the_earlier_model_intact(saved_model_dir: Path, tmp_path: Path):
    target = tmp_path / "AutoEncoder"
    shutil.copytree(saved_model_dir, target)
    before = {path.name: path.read_bytes() for path in target.iterdir()}

    def write_then_fail(directory: Path) -> None:
        (directory / model_store.MODEL_FILENAME).write_bytes(b"half a model")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        model_store.write_atomically(target, write_then_fail)

    assert {path.name: path.read_bytes() for path in target.iterdir()} == before
    assert [path.name for path in tmp_path.iterdir()] == ["AutoEncoder"]


def test_saving_over_an_existing_model_replaces_it_whole(
    trained_detector: TabularAnomalyDetector, saved_model_dir: Path, tmp_path: Path
):
    target = tmp_path / "AutoEncoder"
    shutil.copytree(saved_model_dir, target)
    (target / "stale.txt").write_text("from an older model")

    trained_detector.save(target)

    assert sorted(path.name for path in target.iterdir()) == ["autoencoder.h5", "metadata.pkl", "training_report.png"]
    assert [path.name for path in tmp_path.iterdir()] == ["AutoEncoder"]


def test_saving_through_a_symlink_keeps_the_link(trained_detector: TabularAnomalyDetector, tmp_path: Path):
    (tmp_path / "AutoEncoder_v2").mkdir()
    active = tmp_path / "AutoEncoder_active"
    active.symlink_to("AutoEncoder_v2")

    trained_detector.save(active)

    assert active.is_symlink()
    assert (tmp_path / "AutoEncoder_v2" / "autoencoder.h5").is_file()


def test_a_version_mismatch_warns_at_load(saved_model_dir: Path, tmp_path: Path):
    copy = tmp_path / "AutoEncoder"
    shutil.copytree(saved_model_dir, copy)
    metadata = model_store.load_metadata(copy / "metadata.pkl")
    metadata["library_versions"]["tensorflow"] = "1.0.0"
    model_store.dump_metadata(metadata, copy / "metadata.pkl")

    with pytest.warns(UserWarning, match="tensorflow 1.0.0"):
        TabularAnomalyDetector.load(copy)


def test_the_version_changes_when_the_model_is_retrained(
    saved_model_dir: Path, training_frame: pd.DataFrame, tmp_path: Path
):
    other = TabularAnomalyDetector(random_state=1)
    other.train(training_frame, epochs=2, verbose=0)
    other_dir = other.save(tmp_path / "Other")

    assert (
        TabularAnomalyDetector.load(other_dir).model_info["version"]
        != TabularAnomalyDetector.load(saved_model_dir).model_info["version"]
    )


def test_another_percentile_rethresholds_without_retraining(saved_model_dir: Path, fresh_rows: pd.DataFrame):
    detector = TabularAnomalyDetector.load(saved_model_dir)
    thresholds = [detector.threshold_at(p) for p in (80, 90, 95, 98, 99.5)]
    counts = [int(detector.predict(fresh_rows, threshold=t).sum()) for t in thresholds]

    assert detector.threshold_at(95) == pytest.approx(detector.threshold)
    assert thresholds == sorted(thresholds)
    assert counts == sorted(counts, reverse=True)


def test_the_same_seed_trains_the_same_model(training_frame: pd.DataFrame, fresh_rows: pd.DataFrame):
    first, second = (TabularAnomalyDetector(random_state=42) for _ in range(2))
    for detector in (first, second):
        detector.train(training_frame, epochs=2, verbose=0)

    assert first.threshold == pytest.approx(second.threshold, rel=1e-5)
    np.testing.assert_allclose(first.decision_function(fresh_rows), second.decision_function(fresh_rows), rtol=1e-4)


def test_the_training_report_is_written_beside_the_model(saved_model_dir: Path):
    report = saved_model_dir / model_store.REPORT_FILENAME

    assert report.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- models saved by earlier versions, drift statistics and deterministic scores -------------------------------


def test_a_model_saved_before_drift_statistics_scores_as_it_did():
    """The version before this one scored these rows; its model still loads and gives the same scores."""
    detector = TabularAnomalyDetector.load(MODEL_BEFORE_DRIFT / "AutoEncoder")
    frame = mixed_scoring_frame()
    csv = io.BytesIO()
    frame.to_csv(csv, index=False)

    np.testing.assert_allclose(detector.decision_function(frame), np.load(MODEL_BEFORE_DRIFT / "scores.npy"), rtol=1e-5)
    # The CSV reader now skips a space after a delimiter (so `, "6,000"` is one quoted field, as spreadsheet
    # tools read it): a text cell written " north" reads as "north". Every other row scores as it did.
    read = read_table(csv.getvalue(), "rows.csv")
    spaced = frame.map(lambda cell: isinstance(cell, str) and cell.startswith(" ")).any(axis=1).to_numpy()
    scores = detector.decision_function(read)
    expected = np.load(MODEL_BEFORE_DRIFT / "scores_from_csv.npy")
    np.testing.assert_allclose(scores[~spaced], expected[~spaced], rtol=1e-5)
    assert spaced.sum() == 1 and read["region"][np.flatnonzero(spaced)[0]] == "north"


def test_a_model_without_drift_statistics_reports_drift_unavailable_and_still_scores():
    detector = TabularAnomalyDetector.load(MODEL_BEFORE_DRIFT / "AutoEncoder")
    frame = mixed_scoring_frame()
    drift = detector.drift_accumulator()

    details = detector.score_details(frame, drift=drift)
    report = drift.report()

    np.testing.assert_allclose(details.scores, np.load(MODEL_BEFORE_DRIFT / "scores.npy"), rtol=1e-5)
    assert (report.available, report.verdict) == (False, "unavailable")
    assert report.reason == (
        "the model was trained before drift statistics were recorded: retrain it to get drift reports"
    )


def test_drift_statistics_are_saved_with_the_model(
    trained_detector: TabularAnomalyDetector, saved_model_dir: Path, training_frame: pd.DataFrame
):
    loaded = TabularAnomalyDetector.load(saved_model_dir)
    trained, reloaded = trained_detector.drift_accumulator(), loaded.drift_accumulator()

    trained_detector.score_details(training_frame, drift=trained)
    loaded.score_details(training_frame, drift=reloaded)

    assert loaded.drift_reference_ is not None and loaded.drift_reference_.rows == len(training_frame)
    assert reloaded.report().to_dict() == trained.report().to_dict()
    assert reloaded.report().verdict == "fits"


def test_drift_counted_while_scoring_equals_drift_counted_alone(
    trained_detector: TabularAnomalyDetector, fresh_rows: pd.DataFrame
):
    while_scoring, alone = trained_detector.drift_accumulator(), trained_detector.drift_accumulator()
    shifted = fresh_rows.assign(value2=fresh_rows["value2"] * 3)

    trained_detector.score_details(shifted, drift=while_scoring)
    alone.add(shifted)

    assert while_scoring.report().to_dict() == alone.report().to_dict()
    assert while_scoring.report().flagged_columns == ["value2"]


def test_scores_do_not_depend_on_how_rows_are_split_into_chunks(trained_detector: TabularAnomalyDetector):
    """Whole scoring blocks, small tail blocks and a padded block all give a row the same score."""
    rows = make_normal_transactions(20_000, seed=21)
    whole = trained_detector.decision_function(rows)

    for chunk in (7_000, 2_500, 999):
        pieces = [
            trained_detector.decision_function(rows.iloc[start : start + chunk]) for start in range(0, 20_000, chunk)
        ]
        np.testing.assert_array_equal(np.concatenate(pieces), whole)
    np.testing.assert_array_equal(trained_detector.decision_function(rows), whole)
    np.testing.assert_array_equal(trained_detector.score_details(rows).scores, whole)
