"""Turn a spreadsheet's columns into the numeric matrix the autoencoder learns from.

Fitted once on the training data and stored with the model, so scoring a new file encodes it exactly as
the training file was encoded. Every encoded feature belongs to one input column (``feature_columns``),
which is how reconstruction errors are traced back to the columns that explain an anomaly.

Encoding is two steps. ``parse`` reads each input column once into plain arrays (numbers as float64, text as
codes into its distinct values, dates as minute of the day and weekday); ``encode`` writes those arrays into one
preallocated float32 matrix. The drift statistics (``app.utils.drift``) count the same parsed arrays, so
watching for drift costs no second pass over the table.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, ClassVar

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
# What a missing text cell is encoded as: an ordinary value, frequent enough in some columns to be kept.
MISSING_TEXT = "(missing)"
_ID_NAME = re.compile(r"(^|[_\s-])(id|uuid|guid|key)$|^(index|row|row_?num(ber)?)$", re.IGNORECASE)
_MINUTES_PER_DAY = 24 * 60
# 1970-01-01, day 0 of numpy's calendar, was a Thursday (Monday is 0).
_EPOCH_WEEKDAY = 3


class ColumnMismatchError(ValueError):
    """The dataset lacks columns the model was trained on."""


@dataclass
class NumericColumn:
    """A numeric column: robustly scaled (median, IQR); a missing cell is imputed with the median and flagged.

    The flag feature is there even when training had no gaps, so a gap at scoring time raises the score.
    """

    kind: ClassVar[str] = "numeric"
    name: str
    center: float
    scale: float

    def width(self) -> int:
        """Encoded features: the scaled value and the missing flag."""
        return 2

    def parse(self, series: pd.Series) -> ParsedNumbers:
        """The column's cells as numbers (numbers written as text are read; anything else is missing)."""
        return ParsedNumbers(self, _as_float(series))


@dataclass
class CategoricalColumn:
    """A text or boolean column: one feature per frequent value plus one for anything else."""

    kind: ClassVar[str] = "categorical"
    name: str
    categories: list[str]

    def width(self) -> int:
        """Encoded features: one per frequent value, one for anything else."""
        return len(self.categories) + 1

    def parse(self, series: pd.Series) -> ParsedText:
        """The column's cells as codes into its distinct values, compared as text, and each value's feature."""
        codes, distinct = _factorize_text(series)
        return ParsedText(self, codes, distinct, self.category_codes(distinct))

    def category_codes(self, values: np.ndarray) -> np.ndarray:
        """The feature of each of ``values``: its index among the categories, or the last ("other") feature."""
        codes = self._category_index.get_indexer(values)
        return np.where(codes < 0, len(self.categories), codes)

    @cached_property
    def missing_feature(self) -> int:
        """The feature of a missing cell: the kept value "(missing)" if training had enough of them, else other."""
        return int(self.category_codes(np.array([MISSING_TEXT], dtype=object))[0])

    @cached_property
    def _category_index(self) -> pd.Index:
        return pd.Index(self.categories)


@dataclass
class DatetimeColumn:
    """A date/time column, encoded as the cyclic position in the day and the week.

    The absolute date is left out on purpose: new data always lies after the training data, so an absolute
    date would make every new row look anomalous.
    """

    kind: ClassVar[str] = "datetime"
    name: str
    date_format: str | None
    cycles: list[str]

    def width(self) -> int:
        """Encoded features: sine and cosine per cycle, and the missing flag."""
        return 2 * len(self.cycles) + 1

    def parse(self, series: pd.Series) -> ParsedDates:
        """The column's dates as wall-clock minute of the day and weekday; text is read with the training format.

        Text dates are parsed once per distinct value (exports repeat them a lot), with the format found at
        training; for a column trained on real dates, with the format pandas finds in the first one.
        """
        if pd.api.types.is_datetime64_any_dtype(series):
            stamps = series
        elif _holds_only_text(series):
            codes, distinct = pd.factorize(series)
            parsed = _as_datetime(pd.Series(distinct, dtype=object), self.date_format)
            minutes = np.append(_minutes_since_epoch(parsed), np.datetime64("NaT", "m").view(np.int64))[codes]
            return ParsedDates.from_minutes(self, minutes)
        else:
            stamps = _as_datetime(series, self.date_format)
        return ParsedDates.from_minutes(self, _minutes_since_epoch(stamps))


Column = NumericColumn | CategoricalColumn | DatetimeColumn
COLUMN_KINDS: dict[str, type[Column]] = {kind.kind: kind for kind in (NumericColumn, CategoricalColumn, DatetimeColumn)}
_CYCLE_PERIODS = {"hour": 24.0, "weekday": 7.0}
_CYCLE_STEPS = {"hour": _MINUTES_PER_DAY, "weekday": 7}


@dataclass(frozen=True)
class ParsedNumbers:
    """A numeric column's cells as float64: NaN or an infinity where a cell is missing or unreadable."""

    column: NumericColumn
    values: np.ndarray

    @cached_property
    def missing(self) -> np.ndarray:
        """Where a cell is missing, unreadable or infinite (all imputed with the median and flagged)."""
        return ~np.isfinite(self.values)

    def encode(self, out: np.ndarray) -> None:
        """Write the scaled value and the missing flag into ``out`` (2 features x rows)."""
        missing = self.missing
        scaled = (self.values - self.column.center) / self.column.scale
        scaled[missing] = 0.0  # imputed with the median
        np.clip(scaled, -SCALED_LIMIT, SCALED_LIMIT, out=out[0])
        out[1] = missing


@dataclass(frozen=True)
class ParsedText:
    """A text column's cells as ``codes`` into ``distinct`` (its distinct values as text), -1 where missing.

    ``features`` holds each distinct value's feature (``CategoricalColumn.category_codes``): values are mapped
    once per distinct value, never per cell.
    """

    column: CategoricalColumn
    codes: np.ndarray
    distinct: np.ndarray
    features: np.ndarray

    @property
    def missing(self) -> np.ndarray:
        """Where a cell is empty."""
        return self.codes < 0

    def encode(self, out: np.ndarray) -> None:
        """Write the one-hot features into ``out`` (width features x rows): one feature per row is 1."""
        # Appending the missing cell's feature lets code -1 (missing) pick it like any other code.
        features = np.append(self.features, self.column.missing_feature)[self.codes]
        np.equal(np.arange(self.column.width())[:, None], features[None, :], out=out)


@dataclass(frozen=True)
class ParsedDates:
    """A date column as wall-clock ``minute_of_day`` and ``weekday`` (Monday 0); both 0 where ``missing``."""

    column: DatetimeColumn
    minute_of_day: np.ndarray
    weekday: np.ndarray
    missing: np.ndarray

    @classmethod
    def from_minutes(cls, column: DatetimeColumn, minutes: np.ndarray) -> ParsedDates:
        """From minutes since 1970-01-01 (int64, NaT's value where there is no date)."""
        missing = minutes == np.datetime64("NaT", "m").view(np.int64)
        minutes = np.where(missing, 0, minutes)
        days = minutes // _MINUTES_PER_DAY
        return cls(column, minutes - days * _MINUTES_PER_DAY, (days + _EPOCH_WEEKDAY) % 7, missing)

    def step(self, cycle: str) -> np.ndarray:
        """Each date's step in ``cycle``: its minute of the day (0-1439) or its weekday (0-6)."""
        return self.minute_of_day if cycle == "hour" else self.weekday

    def position(self, cycle: str) -> np.ndarray:
        """The position in ``cycle``: the hour of the day with minutes as a fraction, or the weekday."""
        return _cycle_position(self.step(cycle), cycle)

    def encode(self, out: np.ndarray) -> None:
        """Write sine and cosine per cycle (0 if the date is missing) and the missing flag into ``out``."""
        for index, cycle in enumerate(self.column.cycles):
            # A cycle has few steps (1,440 minutes, 7 days): sine and cosine are looked up, not computed per row;
            # the table's last entry, 0, is a missing date's.
            angle = 2 * np.pi * _cycle_position(np.arange(_CYCLE_STEPS[cycle]), cycle)
            angle /= _CYCLE_PERIODS[cycle]
            steps = np.where(self.missing, _CYCLE_STEPS[cycle], self.step(cycle))
            out[2 * index] = np.append(np.sin(angle), 0.0)[steps]
            out[2 * index + 1] = np.append(np.cos(angle), 0.0)[steps]
        out[-1] = self.missing


ParsedColumn = ParsedNumbers | ParsedText | ParsedDates


@dataclass(frozen=True)
class ParsedTable:
    """A table's input columns parsed once, in the preprocessor's column order."""

    rows: int
    columns: list[ParsedColumn]


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
        columns, dropped = [], {}
        frame = frame.set_axis(normalize_column_names(frame.columns), axis=1)
        for name in frame.columns:
            column, reason = _fit_column(name, frame[name])
            if column is None:
                dropped[name] = reason
            else:
                columns.append(column)
        if not columns:
            raise ValueError(
                "No usable feature column: every column is empty, constant, an identifier or free text "
                f"({', '.join(f'{name}: {why}' for name, why in dropped.items())})."
            )
        return self._set_columns(columns, dropped)

    def to_metadata(self) -> dict[str, Any]:
        """The fitted encoding as builtins, for ``metadata.pkl``."""
        return {
            "columns": [{"kind": column.kind, **asdict(column)} for column in self.columns_],
            "dropped_columns": dict(self.dropped_columns_),
        }

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> TablePreprocessor:
        """The encoding ``to_metadata`` stored."""
        columns = []
        for spec in metadata["columns"]:
            fields = {key: value for key, value in spec.items() if key != "kind"}
            columns.append(COLUMN_KINDS[spec["kind"]](**fields))
        return cls()._set_columns(columns, dict(metadata["dropped_columns"]))

    def _set_columns(self, columns: list[Column], dropped: dict[str, str]) -> TablePreprocessor:
        self.columns_, self.dropped_columns_ = columns, dropped
        self.feature_columns_ = np.repeat(np.arange(len(columns)), [column.width() for column in columns])
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

    def parse(self, frame: pd.DataFrame) -> ParsedTable:
        """Read ``frame``'s input columns (any column order, extra columns ignored), each once."""
        self.check_columns(frame.columns)
        frame = frame.set_axis(normalize_column_names(frame.columns), axis=1)
        return ParsedTable(len(frame), [column.parse(frame[column.name]) for column in self.columns_])

    def encode(self, table: ParsedTable) -> np.ndarray:
        """The float32 matrix (rows x features) of a parsed table.

        Each column writes its features into one preallocated feature-major matrix, where a feature's values
        are contiguous (writing them into a row-major matrix strides through all of it once per feature, about
        30 times slower); one transposing copy then gives the row-major matrix the model reads.
        """
        by_feature = np.empty((len(self.feature_columns_), table.rows), dtype=np.float32)
        start = 0
        for parsed in table.columns:
            stop = start + parsed.column.width()
            parsed.encode(by_feature[start:stop])
            start = stop
        return np.ascontiguousarray(by_feature.T)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Encode ``frame`` (any column order, extra columns ignored) as a float32 matrix."""
        return self.encode(self.parse(frame))


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
    counts = series.fillna(MISSING_TEXT).astype(str).value_counts()
    frequent = counts[counts >= max(2, 0.001 * len(series))].index[:MAX_CATEGORIES]
    return CategoricalColumn(name, [str(value) for value in frequent])


def _fit_datetime(name: str, series: pd.Series, date_format: str | None) -> tuple[Column | None, str]:
    column = DatetimeColumn(name, date_format, list(_CYCLE_PERIODS))
    parsed = column.parse(series)
    observed = ~parsed.missing
    column.cycles = [cycle for cycle in _CYCLE_PERIODS if np.unique(parsed.position(cycle)[observed]).size > 1]
    if not column.cycles:
        return None, "date without a time of day or weekday pattern"
    return column, ""


def _guess_date_format(text: pd.Series) -> str | None:
    sample = text.head(200)
    with warnings.catch_warnings():
        # Pandas warns that a day-first format was guessed without dayfirst=True: the check below settles it.
        warnings.simplefilter("ignore", UserWarning)
        date_format = pd.tseries.api.guess_datetime_format(str(sample.iloc[0]))
    if date_format is None:
        return None
    parsed = pd.to_datetime(sample, format=date_format, errors="coerce")
    return date_format if parsed.notna().mean() >= PARSE_SHARE else None


def _holds_only_text(series: pd.Series) -> bool:
    """Whether every non-empty cell is a str (a text dtype, or an object column of str)."""
    if isinstance(series.dtype, pd.StringDtype):
        return True
    return series.dtype == object and pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty")


def _factorize_text(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's code into the column's distinct values as text (-1 where empty), and those values."""
    if _holds_only_text(series):
        codes, distinct = pd.factorize(series)
    else:
        # Cells that are equal as Python objects can differ as text (1, 1.0 and True): compare them as text.
        missing = series.isna().to_numpy()
        codes, distinct = pd.factorize(series.astype(object).where(~missing, MISSING_TEXT).astype(str))
        codes[missing] = -1
    return codes, np.asarray(distinct, dtype=object)


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


def _cycle_position(steps: np.ndarray, cycle: str) -> np.ndarray:
    if cycle == "hour":
        return steps // 60 + (steps % 60) / 60.0
    return steps.astype(np.float64)


def _minutes_since_epoch(stamps: pd.Series) -> np.ndarray:
    """Wall-clock minutes since 1970-01-01 (a time zone's own clock for zone-aware dates), NaT's value if none."""
    if isinstance(stamps.dtype, pd.DatetimeTZDtype):
        stamps = stamps.dt.tz_localize(None)
    minutes: np.ndarray = np.asarray(stamps.to_numpy()).astype("datetime64[m]").view(np.int64)
    return minutes
