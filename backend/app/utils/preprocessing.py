"""Turn a spreadsheet's columns into the numeric matrix the autoencoder learns from.

Fitted once on the training data and stored with the model, so scoring a new file encodes it exactly as
the training file was encoded. Every encoded feature belongs to one input column (``feature_columns``),
which is how reconstruction errors are traced back to the columns that explain an anomaly.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from app.utils.table_reader import normalize_column_names

# Text columns with more distinct values than this are one-hot encoded by their most frequent values only;
# the rest share an "other" feature, as do values never seen in training.
MAX_CATEGORIES = 30
# A text column whose values are mostly distinct is free text or a key: nothing to learn "normal" from.
MAX_DISTINCT_SHARE_FOR_TEXT = 0.5
# At least this share of a column's non-empty cells must parse for it to count as numeric or datetime.
PARSE_SHARE = 0.95
# Scaled values are clipped here so a wild value (1e300, a typo) stays finite in float32 yet stands out.
SCALED_LIMIT = 1e4
_ID_NAME = re.compile(r"(^|[_\s-])(id|uuid|guid|key)$|^(index|row|row_?num(ber)?)$", re.IGNORECASE)


class ColumnMismatchError(ValueError):
    """The dataset lacks columns the model was trained on."""


@dataclass
class NumericColumn:
    """A numeric column: robustly scaled (median, IQR); a missing cell is imputed with the median and flagged.

    The flag feature is there even when training had no gaps, so a gap at scoring time raises the score.
    """

    name: str
    center: float
    scale: float

    def width(self) -> int:
        """Encoded features: the scaled value and the missing flag."""
        return 2


@dataclass
class CategoricalColumn:
    """A text or boolean column: one feature per frequent value plus one for anything else."""

    name: str
    categories: list[str]

    def width(self) -> int:
        """Encoded features: one per frequent value, one for anything else."""
        return len(self.categories) + 1


@dataclass
class DatetimeColumn:
    """A date/time column, encoded as the cyclic position in the day and the week.

    The absolute date is left out on purpose: new data always lies after the training data, so an absolute
    date would make every new row look anomalous.
    """

    name: str
    date_format: str | None
    cycles: list[str]

    def width(self) -> int:
        """Encoded features: sine and cosine per cycle, and the missing flag."""
        return 2 * len(self.cycles) + 1


Column = NumericColumn | CategoricalColumn | DatetimeColumn
_CYCLE_PERIODS = {"hour": 24.0, "weekday": 7.0}


@dataclass
class TablePreprocessor:
    """Learns how to encode a table's columns (``fit``) and encodes tables the same way (``transform``)."""

    columns_: list[Column] = field(default_factory=list)
    dropped_columns_: dict[str, str] = field(default_factory=dict)
    feature_columns_: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def input_columns(self) -> list[str]:
        """The input columns the encoding uses, in encoding order."""
        return [column.name for column in self.columns_]

    def fit(self, frame: pd.DataFrame) -> TablePreprocessor:
        """Decide each column's encoding from ``frame``; columns that carry no signal are dropped with a reason."""
        self.columns_, self.dropped_columns_ = [], {}
        frame = frame.set_axis(normalize_column_names(frame.columns), axis=1)
        for name in frame.columns:
            column, reason = _fit_column(name, frame[name])
            if column is None:
                self.dropped_columns_[name] = reason
            else:
                self.columns_.append(column)
        if not self.columns_:
            raise ValueError(
                "No usable feature column: every column is empty, constant, an identifier or free text "
                f"({', '.join(f'{name}: {why}' for name, why in self.dropped_columns_.items())})."
            )
        self.feature_columns_ = np.repeat(np.arange(len(self.columns_)), [column.width() for column in self.columns_])
        return self

    def missing_columns(self, columns: Iterable[object]) -> list[str]:
        """The model's input columns that ``columns`` lacks (names compared after ``normalize_column_names``)."""
        present = set(normalize_column_names(columns))
        return [name for name in self.input_columns if name not in present]

    def check_columns(self, columns: Iterable[object]) -> list[str]:
        """Return the dataset columns the model ignores; raise ``ColumnMismatchError`` if any it needs are missing."""
        present = normalize_column_names(columns)
        missing = self.missing_columns(present)
        if missing:
            raise ColumnMismatchError(
                f"Dataset columns don't match model: missing {', '.join(missing)}. "
                f"The model was trained on: {', '.join(self.input_columns)}. "
                "Upload a file with these columns, or train a model for this schema."
            )
        used = set(self.input_columns)
        return [name for name in present if name not in used]

    def expected_value(self, column_index: int, encoded_row: np.ndarray) -> float | str | None:
        """Decode one column's value from an encoded (e.g. reconstructed) row: what the model expected there.

        A number for numeric columns, the most likely known value for text columns (None when the model
        expected an unusual value), None for dates (a position in the day and week is not a date).
        """
        column = self.columns_[column_index]
        start = int(np.searchsorted(self.feature_columns_, column_index))
        if isinstance(column, NumericColumn):
            # The reconstruction is float32: digits past the 7th significant one are noise.
            return float(f"{column.center + column.scale * float(encoded_row[start]):.7g}")
        if isinstance(column, CategoricalColumn):
            best = int(np.argmax(encoded_row[start : start + column.width()]))
            return column.categories[best] if best < len(column.categories) else None
        return None

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Encode ``frame`` (any column order, extra columns ignored) as a float32 matrix."""
        self.check_columns(frame.columns)
        frame = frame.set_axis(normalize_column_names(frame.columns), axis=1)
        blocks = [_transform_column(column, frame[column.name]) for column in self.columns_]
        return np.ascontiguousarray(np.column_stack(blocks), dtype=np.float32)


def _fit_column(name: str, series: pd.Series) -> tuple[Column | None, str]:
    values = series.dropna()
    if values.empty:
        return None, "empty"
    if values.nunique() <= 1 and not series.isna().any():
        return None, "constant"
    if pd.api.types.is_bool_dtype(series):
        return _fit_categorical(name, series.astype("string")), ""
    if pd.api.types.is_datetime64_any_dtype(series):
        return _fit_datetime(name, series, None)
    if pd.api.types.is_numeric_dtype(series):
        if _looks_like_identifier(name, values):
            return None, "identifier (unique per row)"
        return _fit_numeric(name, series), ""
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().mean() >= PARSE_SHARE:
        if _looks_like_identifier(name, numbers.dropna()):
            return None, "identifier (unique per row)"
        return _fit_numeric(name, pd.to_numeric(series, errors="coerce")), ""
    text = values.astype(str)
    date_format = _guess_date_format(text)
    if date_format is not None:
        return _fit_datetime(name, series, date_format)
    distinct = text.nunique()
    if distinct == len(text) and len(text) >= 20:
        return None, "identifier (unique per row)"
    if distinct > MAX_CATEGORIES and distinct > MAX_DISTINCT_SHARE_FOR_TEXT * len(text):
        return None, "free text (mostly distinct values)"
    return _fit_categorical(name, series), ""


def _looks_like_identifier(name: str, values: pd.Series) -> bool:
    """An integer column unique per row that is named like a key or counts up like a row number."""
    if not pd.api.types.is_integer_dtype(values) and not (values == np.round(values)).all():
        return False
    if values.nunique() != len(values) or len(values) < 20:
        return False
    return bool(_ID_NAME.search(name)) or values.is_monotonic_increasing or values.is_monotonic_decreasing


def _fit_numeric(name: str, series: pd.Series) -> NumericColumn:
    values = _as_float(series)
    finite = values[np.isfinite(values)]
    center = float(np.median(finite))
    q25, q75 = np.percentile(finite, [25, 75])
    scale = float(q75 - q25)
    if not scale > 0:
        # A column that is mostly one value (IQR 0) still varies: fall back to its spread, then to 1.
        scale = float(np.std(finite)) or 1.0
    return NumericColumn(name, center, scale)


def _fit_categorical(name: str, series: pd.Series) -> CategoricalColumn:
    counts = series.fillna("(missing)").astype(str).value_counts()
    frequent = counts[counts >= max(2, 0.001 * len(series))].index[:MAX_CATEGORIES]
    return CategoricalColumn(name, [str(value) for value in frequent])


def _fit_datetime(name: str, series: pd.Series, date_format: str | None) -> tuple[Column | None, str]:
    stamps = _as_datetime(series, date_format)
    cycles = [cycle for cycle in _CYCLE_PERIODS if _cycle_position(stamps, cycle).dropna().nunique() > 1]
    if not cycles:
        return None, "date without a time of day or weekday pattern"
    return DatetimeColumn(name, date_format, cycles), ""


def _guess_date_format(text: pd.Series) -> str | None:
    sample = text.head(200)
    date_format = pd.tseries.api.guess_datetime_format(str(sample.iloc[0]))
    if date_format is None:
        return None
    parsed = pd.to_datetime(sample, format=date_format, errors="coerce")
    return date_format if parsed.notna().mean() >= PARSE_SHARE else None


def _as_float(series: pd.Series) -> np.ndarray:
    if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        series = pd.to_numeric(series, errors="coerce")
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def _as_datetime(series: pd.Series, date_format: str | None) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(series):
        return series
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return pd.to_datetime(series, format=date_format, errors="coerce")


def _cycle_position(stamps: pd.Series, cycle: str) -> pd.Series:
    if cycle == "hour":
        return stamps.dt.hour + stamps.dt.minute / 60.0
    return stamps.dt.day_of_week.astype("float64")


def _transform_column(column: Column, series: pd.Series) -> np.ndarray:
    if isinstance(column, NumericColumn):
        values = _as_float(series)
        missing = ~np.isfinite(values)
        scaled = np.clip(
            (np.where(missing, column.center, values) - column.center) / column.scale, -SCALED_LIMIT, SCALED_LIMIT
        )
        return np.column_stack([scaled, missing])
    if isinstance(column, CategoricalColumn):
        codes = pd.Index(column.categories).get_indexer(series.fillna("(missing)").astype(str))
        # Code -1 (a value not among the frequent ones, or never seen) lands in the last, "other" feature.
        one_hot = np.zeros((len(series), column.width()), dtype=np.float32)
        one_hot[np.arange(len(series)), np.where(codes < 0, column.width() - 1, codes)] = 1.0
        return one_hot
    stamps = _as_datetime(series, column.date_format)
    parts = []
    for cycle in column.cycles:
        angle = 2 * np.pi * _cycle_position(stamps, cycle).to_numpy(dtype=np.float64, na_value=np.nan)
        angle /= _CYCLE_PERIODS[cycle]
        parts += [np.nan_to_num(np.sin(angle)), np.nan_to_num(np.cos(angle))]
    parts.append(stamps.isna().to_numpy(dtype=np.float64))
    return np.column_stack(parts)
