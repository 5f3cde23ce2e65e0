"""The contract's Python API, line by line, as the seed's Testing section uses it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from app.utils.anomaly_detector import TabularAnomalyDetector, detect_anomalies_in_excel
from app.utils.sample_data import inject_anomalies


def test_loaded_model_reports_the_seed_attributes(saved_model_dir: Path, trained_detector: TabularAnomalyDetector):
    detector = TabularAnomalyDetector.load(saved_model_dir)

    assert detector.is_trained is True
    assert detector.feature_names == trained_detector.feature_names
    assert "value1" in detector.feature_names
    assert detector.threshold == pytest.approx(trained_detector.threshold)


def test_untrained_detector_is_not_trained():
    assert TabularAnomalyDetector().is_trained is False


def test_loaded_model_scores_exactly_as_the_trained_one(
    saved_model_dir: Path, trained_detector: TabularAnomalyDetector, fresh_rows: pd.DataFrame
):
    loaded = TabularAnomalyDetector.load(saved_model_dir)

    np.testing.assert_allclose(
        loaded.decision_function(fresh_rows), trained_detector.decision_function(fresh_rows), rtol=1e-5
    )


def test_decision_function_ranks_injected_anomalies_highest(
    trained_detector: TabularAnomalyDetector, fresh_rows: pd.DataFrame
):
    rows, labels = inject_anomalies(fresh_rows, fraction=0.05, seed=3)

    scores = trained_detector.decision_function(rows)

    assert scores.shape == (len(rows),)
    assert roc_auc_score(labels, scores) > 0.95


def test_predict_labels_rows_scoring_above_the_threshold(
    trained_detector: TabularAnomalyDetector, fresh_rows: pd.DataFrame
):
    labels = trained_detector.predict(fresh_rows)

    assert set(np.unique(labels)) <= {0, 1}
    np.testing.assert_array_equal(labels, trained_detector.decision_function(fresh_rows) > trained_detector.threshold)


def test_about_the_threshold_percentile_of_normal_rows_are_flagged(
    trained_detector: TabularAnomalyDetector, fresh_rows: pd.DataFrame
):
    rate = trained_detector.predict(fresh_rows).mean()

    assert 0.01 <= rate <= 0.12


def test_detect_anomalies_in_excel_returns_anomalous_rows_highest_score_first(
    saved_model_dir: Path, fresh_rows: pd.DataFrame
):
    rows, _ = inject_anomalies(fresh_rows, fraction=0.05, seed=3)

    anomalies, detector = detect_anomalies_in_excel(rows, model_path=saved_model_dir, train_if_needed=False)

    assert len(anomalies) == int(detector.predict(rows).sum())
    assert anomalies["anomaly_score"].is_monotonic_decreasing
    assert (anomalies["anomaly_score"] > detector.threshold).all()
    pd.testing.assert_frame_equal(anomalies.drop(columns="anomaly_score"), rows.loc[anomalies.index])


def test_detect_anomalies_in_excel_applies_another_percentile_without_retraining(
    saved_model_dir: Path, fresh_rows: pd.DataFrame
):
    strict, _ = detect_anomalies_in_excel(fresh_rows, model_path=saved_model_dir, threshold_percentile=99)
    lenient, _ = detect_anomalies_in_excel(fresh_rows, model_path=saved_model_dir, threshold_percentile=90)

    assert len(strict) <= len(lenient)


def test_no_model_and_no_training_raises_the_seed_error(tmp_path: Path, fresh_rows: pd.DataFrame):
    with pytest.raises(ValueError, match="No model provided and train_if_needed=False"):
        detect_anomalies_in_excel(fresh_rows, model_path=tmp_path / "missing", train_if_needed=False)

    with pytest.raises(ValueError, match="No model provided and train_if_needed=False"):
        detect_anomalies_in_excel(fresh_rows, model_path=None, train_if_needed=False)


def test_model_directory_without_h5_raises_file_not_found_naming_it(saved_model_dir: Path, tmp_path: Path):
    incomplete = tmp_path / "AutoEncoder"
    incomplete.mkdir()
    shutil.copy(saved_model_dir / "metadata.pkl", incomplete / "metadata.pkl")

    with pytest.raises(FileNotFoundError, match="autoencoder.h5"):
        TabularAnomalyDetector.load(incomplete)
    with pytest.raises(FileNotFoundError, match="autoencoder.h5"):
        detect_anomalies_in_excel(pd.DataFrame({"a": [1]}), model_path=incomplete, train_if_needed=False)


def test_missing_columns_raise_value_error_naming_them(
    trained_detector: TabularAnomalyDetector, fresh_rows: pd.DataFrame
):
    with pytest.raises(ValueError, match="Dataset columns don't match model") as raised:
        trained_detector.decision_function(fresh_rows.drop(columns=["value3", "region"]))

    assert "value3" in str(raised.value) and "region" in str(raised.value)


def test_column_order_does_not_matter_and_extra_columns_are_reported(
    trained_detector: TabularAnomalyDetector, fresh_rows: pd.DataFrame
):
    shuffled = fresh_rows[list(reversed(fresh_rows.columns))].assign(note="free text", extra=1.0)

    np.testing.assert_allclose(
        trained_detector.decision_function(shuffled), trained_detector.decision_function(fresh_rows), rtol=1e-6
    )
    assert set(trained_detector.check_columns(shuffled.columns)) == {"note", "extra", "id"}


def test_training_on_too_few_rows_is_refused(training_frame: pd.DataFrame):
    with pytest.raises(ValueError, match="at least 100 rows"):
        TabularAnomalyDetector().train(training_frame.head(50), epochs=1, verbose=0)


def test_fallback_training_on_the_data_itself(fresh_rows: pd.DataFrame):
    anomalies, detector = detect_anomalies_in_excel(fresh_rows, model_path=None, train_if_needed=True)

    assert detector.is_trained
    assert 0 < len(anomalies) < len(fresh_rows)


@pytest.mark.parametrize("column", ["value2", "value9", "value15"])
def test_a_row_with_one_column_pushed_far_off_names_that_column_first(
    trained_detector: TabularAnomalyDetector, fresh_rows: pd.DataFrame, column: str
):
    rows = fresh_rows.copy()
    usual = rows.loc[5, column]
    rows.loc[5, column] = usual + 10 * fresh_rows[column].std()

    details = trained_detector.score_details(rows)
    [explanation] = trained_detector.explain(details, [5], top_n=3)

    assert explanation[0]["column"] == column
    assert explanation[0]["share"] > 0.5
    assert [item["share"] for item in explanation] == sorted((item["share"] for item in explanation), reverse=True)
    # The value the model expected is near the usual range, far from the pushed value.
    assert abs(explanation[0]["expected"] - usual) < abs(explanation[0]["expected"] - rows.loc[5, column])


def test_an_unseen_category_is_explained_by_its_column(
    trained_detector: TabularAnomalyDetector, fresh_rows: pd.DataFrame
):
    rows = fresh_rows.copy()
    rows.loc[3, "channel"] = "carrier pigeon"

    [explanation] = trained_detector.explain(trained_detector.score_details(rows), [3], top_n=1)

    assert explanation[0]["column"] == "channel"
    assert explanation[0]["expected"] in {"web", "store", "phone"}
