"""Drift against the training data: quiet on normal rows at any size, loud on the column that moved, plain data out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.utils import model_store
from app.utils.drift import (
    FALSE_ALARM_RATE,
    MODERATE_PSI,
    NO_ROWS_REASON,
    RETRAIN_ADVICE,
    UNTRACKED_MODEL_REASON,
    ColumnDrift,
    DriftAccumulator,
    DriftReference,
    DriftReport,
    chance_of_difference,
    population_stability,
)
from app.utils.preprocessing import TablePreprocessor
from app.utils.sample_data import make_normal_transactions

TRAINING_ROWS = 10_000
SIZES = (500, 50_000)


@pytest.fixture(scope="module")
def training() -> pd.DataFrame:
    return make_normal_transactions(TRAINING_ROWS, seed=0)


@pytest.fixture(scope="module")
def preprocessor(training: pd.DataFrame) -> TablePreprocessor:
    return TablePreprocessor().fit(training)


@pytest.fixture(scope="module")
def reference(preprocessor: TablePreprocessor, training: pd.DataFrame) -> DriftReference:
    return DriftReference.from_training(preprocessor.parse(training))


def drift_of(preprocessor: TablePreprocessor, reference: DriftReference | None, frame: pd.DataFrame) -> DriftReport:
    """Accumulate ``frame`` as an analysis does: 20,000 rows at a time."""
    accumulator = DriftAccumulator(preprocessor, reference)
    for start in range(0, len(frame), 20_000):
        accumulator.add(frame.iloc[start : start + 20_000])
    return accumulator.report()


def column(report: DriftReport, name: str) -> ColumnDrift:
    return next(column for column in report.columns if column.name == name)


@pytest.mark.parametrize(
    ("rows", "seed"), [(500, seed) for seed in range(1, 21)] + [(50_000, seed) for seed in (1, 2, 3)]
)
def test_rows_from_the_training_distribution_flag_no_column(
    preprocessor: TablePreprocessor, reference: DriftReference, rows: int, seed: int
):
    report = drift_of(preprocessor, reference, make_normal_transactions(rows, seed=seed))

    assert report.verdict == "fits"
    assert report.flagged_columns == []
    assert report.advice is None
    assert report.rows == rows and report.reference_rows == TRAINING_ROWS
    assert len(report.columns) == len(preprocessor.columns_)


def test_false_alarms_on_a_hundred_rows_stay_near_the_one_percent_design(
    preprocessor: TablePreprocessor, reference: DriftReference
):
    """At 100 rows, sampling noise alone puts some column's PSI past 0.1 in nearly every report; the chance test
    keeps the reports that flag anything near ``FALSE_ALARM_RATE`` (1%; 3% allows for 300 reports' own noise)."""
    reports = [drift_of(preprocessor, reference, make_normal_transactions(100, seed=seed)) for seed in range(300)]

    past_cut_off = sum(any(column.psi >= MODERATE_PSI for column in report.columns) for report in reports)
    flagging = sum(report.verdict == "shifted" for report in reports)
    assert past_cut_off > 250
    assert flagging <= 300 * 3 * FALSE_ALARM_RATE


@pytest.mark.parametrize("rows", SIZES)
def test_a_numeric_column_shifted_by_one_standard_deviation_is_flagged_alone(
    preprocessor: TablePreprocessor, reference: DriftReference, training: pd.DataFrame, rows: int
):
    frame = make_normal_transactions(rows, seed=4)
    frame["value5"] += training["value5"].std()

    report = drift_of(preprocessor, reference, frame)

    assert report.verdict == "shifted"
    assert report.flagged_columns == ["value5"]
    assert report.advice == RETRAIN_ADVICE
    assert column(report, "value5").level == "major"
    assert "value5 (major)" in report.summary


@pytest.mark.parametrize("rows", SIZES)
def test_a_new_dominant_category_is_flagged_in_that_column_alone(
    preprocessor: TablePreprocessor, reference: DriftReference, rows: int
):
    frame = make_normal_transactions(rows, seed=5)
    frame.loc[frame.index[: int(rows * 0.6)], "channel"] = "marketplace"

    report = drift_of(preprocessor, reference, frame)

    assert report.flagged_columns == ["channel"]
    channel = column(report, "channel")
    assert channel.unseen_share == pytest.approx(0.6)
    assert {"histogram": "values", "label": "other", "reference_share": 0.0, "observed_share": pytest.approx(0.6)} in [
        vars(bar) for bar in channel.bins
    ]


@pytest.mark.parametrize("rows", SIZES)
def test_dates_moved_to_night_hours_flag_the_date_column(
    preprocessor: TablePreprocessor, reference: DriftReference, rows: int
):
    frame = make_normal_transactions(rows, seed=6)
    night = np.random.default_rng(6).integers(0, 5, rows)
    frame["timestamp"] = frame["timestamp"].dt.normalize() + pd.to_timedelta(night, unit="h")
    frame.loc[frame.index[:10], "timestamp"] = pd.NaT

    report = drift_of(preprocessor, reference, frame)

    assert report.flagged_columns == ["timestamp"]
    timestamp = column(report, "timestamp")
    assert timestamp.unseen_share == (rows - 10) / rows  # no training row was at night; a gap is not a new value
    assert timestamp.missing_rate == 10 / rows
    assert [(bar.histogram, bar.label) for bar in timestamp.bins[:2]] == [
        ("hour of day", "00:00"),
        ("hour of day", "01:00"),
    ]
    assert [bar.label for bar in timestamp.bins[24:32]] == ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", "missing"]
    assert {bar.histogram for bar in timestamp.bins[24:31]} == {"weekday"}


def test_a_shift_needs_more_evidence_on_a_handful_of_rows(
    preprocessor: TablePreprocessor, reference: DriftReference, training: pd.DataFrame
):
    """On 20 rows even a real one-deviation shift is within what chance alone can produce, so nothing is flagged."""
    frame = make_normal_transactions(20, seed=7)
    frame["value5"] += training["value5"].std()

    report = drift_of(preprocessor, reference, frame)

    assert column(report, "value5").psi > 0.25
    assert report.verdict == "fits"


def test_missing_cells_and_values_outside_the_training_range_are_reported(
    preprocessor: TablePreprocessor, reference: DriftReference, training: pd.DataFrame
):
    frame = make_normal_transactions(10_000, seed=8)
    frame.loc[frame.index[:1000], "value3"] = np.nan
    frame.loc[frame.index[1000:1500], "value3"] = training["value3"].max() + 1

    report = drift_of(preprocessor, reference, frame)

    value3 = column(report, "value3")
    assert value3.missing_rate == pytest.approx(0.1)
    assert value3.reference_missing_rate == 0.0
    assert value3.missing_rate_change == pytest.approx(0.1)
    assert value3.unseen_share == pytest.approx(0.05)
    assert report.flagged_columns == ["value3"]


def test_a_rare_training_value_is_seen_and_a_new_one_is_not():
    training = pd.DataFrame({"colour": ["red"] * 600 + ["blue"] * 399 + ["teal"]})
    preprocessor = TablePreprocessor().fit(training)
    reference = DriftReference.from_training(preprocessor.parse(training))
    assert preprocessor.columns_[0].categories == ["red", "blue"]  # teal is too rare to keep

    report = drift_of(preprocessor, reference, pd.DataFrame({"colour": ["red", "teal", "mauve", None]}))

    colour = column(report, "colour")
    assert colour.unseen_share == 0.25  # mauve; teal went to "other" in training too
    assert colour.missing_rate == 0.25
    assert [(bar.label, bar.reference_share) for bar in colour.bins] == [
        ("red", 0.6),
        ("blue", 0.399),
        ("other", 0.001),
        ("missing", 0.0),
    ]


def test_chunks_add_up_to_the_whole_table(preprocessor: TablePreprocessor, reference: DriftReference):
    frame = make_normal_transactions(45_000, seed=9)
    whole = DriftAccumulator(preprocessor, reference)
    whole.add(frame)

    assert drift_of(preprocessor, reference, frame).to_dict() == whole.report().to_dict()


def test_the_report_is_json_ready_and_each_histogram_sums_to_one(
    preprocessor: TablePreprocessor, reference: DriftReference
):
    report = drift_of(preprocessor, reference, make_normal_transactions(2_000, seed=10))

    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["verdict"] == "fits" and as_json["available"] is True
    value1 = next(column for column in as_json["columns"] if column["name"] == "value1")
    assert set(value1) == {
        "name", "kind", "psi", "unseen_share", "missing_rate", "reference_missing_rate", "missing_rate_change",
        "level", "flagged", "bins",
    }  # fmt: skip
    assert value1["kind"] == "numeric" and value1["level"] == "none" and value1["flagged"] is False
    assert len(value1["bins"]) == 11  # ten decile bins and missing
    for key in ("reference_share", "observed_share"):
        assert sum(bar[key] for bar in value1["bins"]) == pytest.approx(1.0)


def test_without_reference_statistics_drift_is_unavailable_with_the_reason(preprocessor: TablePreprocessor):
    accumulator = DriftAccumulator(preprocessor, None)
    accumulator.add(make_normal_transactions(100, seed=11))

    report = accumulator.report().to_dict()

    assert report["available"] is False
    assert report["verdict"] == "unavailable"
    assert report["reason"] == UNTRACKED_MODEL_REASON
    assert "retrain it to get drift reports" in report["summary"]
    assert report["columns"] == []


def test_no_rows_give_no_verdict(preprocessor: TablePreprocessor, reference: DriftReference):
    report = DriftAccumulator(preprocessor, reference).report()

    assert (report.verdict, report.reason) == ("unavailable", NO_ROWS_REASON)


def test_the_reference_survives_metadata_pkl(
    preprocessor: TablePreprocessor, reference: DriftReference, tmp_path: Path
):
    """Stored as builtins and numpy arrays, so the restricted unpickler reads it back."""
    model_store.dump_metadata({"drift_reference": reference.to_metadata()}, tmp_path / "metadata.pkl")
    stored = DriftReference.from_metadata(model_store.load_metadata(tmp_path / "metadata.pkl")["drift_reference"])
    frame = make_normal_transactions(1_000, seed=12)

    assert drift_of(preprocessor, stored, frame).to_dict() == drift_of(preprocessor, reference, frame).to_dict()


def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift():
    shares = np.array([0.25, 0.25, 0.25, 0.25])
    moved = np.array([0.1, 0.2, 0.3, 0.4])

    assert population_stability(shares, shares, 1_000, 1_000) == 0.0
    assert population_stability(shares, moved, 1_000, 1_000) == pytest.approx(
        np.sum((moved - shares) * np.log(moved / shares))
    )


def test_an_empty_bin_counts_as_half_a_row():
    psi = population_stability(np.array([0.5, 0.5]), np.array([1.0, 0.0]), 100, 10_000)

    assert psi == pytest.approx(0.5 * np.log(1 / 0.5) + (0.005 - 0.5) * np.log(0.005 / 0.5))


def test_the_chance_of_a_difference_falls_with_the_row_count():
    reference, observed = np.array([0.5, 0.5]), np.array([0.6, 0.4])

    chances = [chance_of_difference(reference, observed, rows, 10_000) for rows in (20, 200, 2_000)]

    assert chances == sorted(chances, reverse=True)
    assert chances[0] > 0.3 and chances[-1] < 1e-9
    assert chance_of_difference(np.array([0.5, 0.5, 0.0]), np.array([0.5, 0.5, 0.0]), 100, 10_000) == 1.0


def test_rows_parsed_for_another_model_are_refused(preprocessor: TablePreprocessor, reference: DriftReference):
    other = TablePreprocessor().fit(pd.DataFrame({"colour": ["red", "blue"] * 50}))

    with pytest.raises(ValueError, match="parsed for another model"):
        DriftAccumulator(preprocessor, reference).add_parsed(other.parse(pd.DataFrame({"colour": ["red"]})))
