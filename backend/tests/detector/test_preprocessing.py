"""What real spreadsheets throw at the detector: new categories, gaps, keys, dates as text, numbers as text."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from app.utils import model_store
from app.utils.anomaly_detector import TabularAnomalyDetector
from app.utils.preprocessing import CategoricalColumn, DatetimeColumn, ParsedDates, TablePreprocessor
from app.utils.table_reader import read_table
from tests.detector.mixed_tables import MODEL_BEFORE_DRIFT, mixed_scoring_frame


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


# --- one parse, one preallocated matrix: the same matrix the earlier, column-stacking version gave --------------


@pytest.mark.parametrize("source", ["frame", "csv"])
def test_the_encoding_is_the_matrix_an_earlier_version_gave(source: str):
    """Every column kind (numbers with gaps, infinities and text numbers; text with unseen values and gaps; dates
    as real dates and as text, unreadable ones; booleans with gaps), encoded by the version before this one."""
    preprocessor = TablePreprocessor.from_metadata(
        model_store.load_metadata(MODEL_BEFORE_DRIFT / "AutoEncoder" / "metadata.pkl")
    )
    frame = mixed_scoring_frame()
    after_a_space = np.zeros(len(frame), dtype=bool)
    if source == "csv":
        after_a_space = frame["region"].str.startswith(" ", na=False).to_numpy()
        frame = read_table(_as_csv(frame), "rows.csv")
    expected = np.load(MODEL_BEFORE_DRIFT / ("encoded.npy" if source == "frame" else "encoded_from_csv.npy"))

    encoded = preprocessor.transform(frame)

    assert {column.kind for column in preprocessor.columns_} == {"numeric", "categorical", "datetime"}
    assert encoded.dtype == np.float32 and encoded.flags.c_contiguous
    np.testing.assert_array_equal(encoded[~after_a_space], expected[~after_a_space])
    if source == "csv":
        # The one change since that version: the CSV reader skips a space after a delimiter (so `, "6,000,000"` is
        # one quoted field, as spreadsheet tools read it), so `, north` is the known region "north".
        assert after_a_space.sum() == 1
        unspaced = read_table(_as_csv(mixed_scoring_frame().assign(region=lambda f: f["region"].str.lstrip())), "b.csv")
        np.testing.assert_array_equal(encoded[after_a_space], preprocessor.transform(unspaced)[after_a_space])
        assert not np.array_equal(encoded[after_a_space], expected[after_a_space])


def _as_csv(frame: pd.DataFrame) -> bytes:
    csv = io.BytesIO()
    frame.to_csv(csv, index=False)
    return csv.getvalue()


def test_text_dates_are_read_with_the_format_found_in_training():
    """03/04 is the 3rd of April for a column trained on day-first dates, though it could be read month first."""
    training = pd.DataFrame({"booked": [f"{day:02d}/04/2025 {day % 12 + 8}:30" for day in range(13, 31)] * 10})
    preprocessor = TablePreprocessor().fit(training)

    parsed = preprocessor.parse(pd.DataFrame({"booked": ["03/04/2025 10:30", "03/04/2025 10:30", None]})).columns[0]

    assert preprocessor.columns_[0].date_format == "%d/%m/%Y %H:%M"
    assert isinstance(parsed, ParsedDates)
    assert parsed.weekday.tolist()[:2] == [3, 3]  # Thursday, 3 April 2025 (4 March was a Tuesday)
    assert parsed.minute_of_day.tolist()[:2] == [630, 630]
    assert parsed.missing.tolist() == [False, False, True]


def test_dates_far_from_1970_and_in_a_time_zone_are_placed_by_their_own_clock():
    stamps = pd.Series(pd.to_datetime(["1912-06-23 23:59:59", "1969-12-31 00:01:00", "2250-01-01 12:00:00", None]))
    zoned = pd.Series(pd.to_datetime(["2025-03-30 01:30", "2025-03-30 03:30"])).dt.tz_localize("Europe/Paris")
    column = DatetimeColumn("when", None, ["hour", "weekday"])

    for series in (stamps, zoned):
        parsed = column.parse(series)
        observed = series.notna().to_numpy()
        np.testing.assert_array_equal(
            parsed.position("hour")[observed], (series.dt.hour + series.dt.minute / 60)[observed]
        )
        np.testing.assert_array_equal(parsed.weekday[observed], series.dt.day_of_week[observed])


def test_mixed_cells_in_a_text_column_are_compared_as_text():
    """1, 1.0 and True are equal as Python values but are three different values in a spreadsheet column."""
    column = CategoricalColumn("flag", ["1", "1.0", "True"])

    parsed = column.parse(pd.Series([1, 1.0, True, None, "1"], dtype=object))
    encoded = np.empty((column.width(), 5), dtype=np.float32)
    parsed.encode(encoded)

    assert encoded.argmax(axis=0).tolist() == [0, 1, 2, 3, 0]  # the gap: "other", as "(missing)" is not kept
    assert parsed.missing.tolist() == [False, False, False, True, False]
