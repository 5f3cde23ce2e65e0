"""What real spreadsheets throw at the detector: new categories, gaps, keys, dates as text, numbers as text."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app.utils.anomaly_detector import TabularAnomalyDetector
from app.utils.preprocessing import TablePreprocessor


def test_a_category_never_seen_in_training_raises_the_row_score(
    trained_detector: TabularAnomalyDetector, fresh_rows: pd.DataFrame
):
    unseen = fresh_rows.assign(region="atlantis")

    before = trained_detector.decision_function(fresh_rows)
    after = trained_detector.decision_function(unseen)

    assert (after > before).all()


def test_a_missing_value_raises_the_row_score_instead_of_crashing(
    trained_detector: TabularAnomalyDetector, fresh_rows: pd.DataFrame
):
    gappy = fresh_rows.copy()
    gappy["value5"] = np.nan
    gappy["channel"] = None

    before = trained_detector.decision_function(fresh_rows)
    after = trained_detector.decision_function(gappy)

    assert np.isfinite(after).all()
    assert (after > before).all()


def test_identifier_and_constant_columns_are_left_out_and_named(training_frame: pd.DataFrame):
    frame = training_frame.assign(
        constant=7, order_key=[f"ORD-{i:06d}" for i in range(len(training_frame))], empty=np.nan
    )

    preprocessor = TablePreprocessor().fit(frame)

    assert preprocessor.dropped_columns_ == {
        "id": "identifier (unique per row)",
        "constant": "constant",
        "order_key": "identifier (unique per row)",
        "empty": "empty",
    }
    assert not {"id", "constant", "order_key", "empty"} & set(preprocessor.input_columns)


def test_unique_measurements_are_kept_as_numbers(training_frame: pd.DataFrame):
    """Floats that happen to be unique per row are measurements, not keys."""
    frame = training_frame.assign(weight=np.random.default_rng(0).normal(70, 10, len(training_frame)))

    preprocessor = TablePreprocessor().fit(frame)

    assert frame["weight"].is_unique
    assert "weight" in preprocessor.input_columns


def test_dates_written_as_text_encode_like_real_dates(training_frame: pd.DataFrame, fresh_rows: pd.DataFrame):
    preprocessor = TablePreprocessor().fit(training_frame)
    as_text = fresh_rows.assign(timestamp=fresh_rows["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S"))

    np.testing.assert_allclose(preprocessor.transform(as_text), preprocessor.transform(fresh_rows))


def test_numbers_written_as_text_and_infinities_are_read_as_numbers(training_frame: pd.DataFrame):
    preprocessor = TablePreprocessor().fit(training_frame)
    rows = training_frame.head(3).copy()
    rows["value2"] = rows["value2"].astype(object)
    rows.loc[0, "value2"] = str(training_frame.loc[0, "value2"])
    rows.loc[1, "value2"] = np.inf

    encoded = preprocessor.transform(rows)
    reference = preprocessor.transform(training_frame.head(3))

    assert np.isfinite(encoded).all()
    np.testing.assert_allclose(encoded[0], reference[0])
    assert not np.allclose(encoded[1], reference[1])  # infinity counts as a missing, flagged value


def test_a_table_with_no_usable_column_is_refused():
    frame = pd.DataFrame({"id": range(200), "constant": 1})

    with pytest.raises(ValueError, match="No usable feature column"):
        TablePreprocessor().fit(frame)


def test_column_names_are_compared_without_surrounding_spaces(training_frame: pd.DataFrame):
    padded = training_frame.rename(columns={"value1": " value1 ", "region": "region "})

    preprocessor = TablePreprocessor().fit(padded)

    assert "value1" in preprocessor.input_columns and "region" in preprocessor.input_columns
    np.testing.assert_allclose(preprocessor.transform(training_frame), preprocessor.transform(padded))


def test_names_equal_once_stripped_stay_two_columns(training_frame: pd.DataFrame):
    frame = training_frame.assign(**{"value1 ": training_frame["value2"]})

    preprocessor = TablePreprocessor().fit(frame)

    assert {"value1", "value1.1"} <= set(preprocessor.input_columns)
