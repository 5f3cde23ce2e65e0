"""Does the model still fit new data? Each column compared with statistics recorded from the training rows.

At training, ``DriftReference.from_training`` keeps a compact histogram of every column the model uses, over
all training rows: numbers by the bins between their deciles, text by each value the encoding keeps plus
"other", dates by hour of the day and by weekday. Every histogram ends with a bin for missing cells. An
analysis counts its rows into the same bins a chunk at a time (``DriftAccumulator``), from the arrays the
preprocessor already parsed for scoring, and ``DriftAccumulator.report`` gives, per column:

- the population stability index, PSI = sum over bins of (observed - reference) * ln(observed / reference),
  each share floored at half a row of its sample, so an empty bin counts as rare rather than impossible;
- the share of values never seen in training: numbers outside the training range, text values no training
  row had, dates at an hour or on a weekday no training row had;
- the missing rate now, at training, and the change.

When is a column flagged? The usual PSI cut-offs are 0.1 (moderate shift) and 0.25 (major shift). But PSI
also measures sampling noise: with no drift at all, its expected value is about (k - 1)(1/n + 1/N) for k bins,
n rows analysed and N training rows: about 0.02 for 10 bins at 500 rows, 0.1 at 100 rows, 0.001 at 50,000.
On a few hundred rows the cut-offs alone would flag columns that did not move. So a histogram counts as
shifted only when its PSI passes the cut-off and the chi-square test of homogeneity (training counts against
analysed counts, k - 1 degrees of freedom) says a difference that large is unlikely by chance: less likely
than ``FALSE_ALARM_RATE`` (1%) divided by the number of histograms tested (Bonferroni), so a report on data
from the training distribution flags any column about 1% of the time, at any row count. (The test
uses Pearson's statistic rather than PSI * nN / (n + N), whose chi-square approximation underestimates its
tail below a few hundred rows: on 100 normal rows it gave 3.4% false alarms, Pearson's 1.0%.) Large analyses
are thus judged by the cut-offs, a few hundred rows need a somewhat larger shift, a handful of rows flags
nothing.
A date column, with two histograms, is flagged when either is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy.special import chdtrc

from app.utils.preprocessing import (
    CategoricalColumn,
    DatetimeColumn,
    NumericColumn,
    ParsedColumn,
    ParsedDates,
    ParsedNumbers,
    ParsedTable,
    ParsedText,
    TablePreprocessor,
)

MODERATE_PSI = 0.1
MAJOR_PSI = 0.25
# The chance that a report flags any column of data drawn from the training distribution.
FALSE_ALARM_RATE = 0.01
# Text values remembered per column to tell a value never seen in training; beyond this many distinct
# values, the rarest training values count as never seen.
MAX_SEEN_VALUES = 100_000
RETRAIN_ADVICE = "retrain on recent normal data"
UNTRACKED_MODEL_REASON = "the model was trained before drift statistics were recorded: retrain it to get drift reports"
NO_ROWS_REASON = "no rows were scored, so there is nothing to compare with the training data"
_DECILES = np.linspace(0.0, 1.0, 11)
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MISSING_LABEL = "missing"
_LEVELS = ("none", "moderate", "major")


@dataclass(frozen=True)
class Histogram:
    """One reference histogram of a column: bin labels and the training rows' shares (last bin: missing)."""

    name: str  # values, hour of day or weekday
    labels: list[str]
    shares: np.ndarray


@dataclass(frozen=True)
class ColumnCounts:
    """Rows counted into a column's histograms (one count array per histogram) and how many were never seen."""

    histograms: list[np.ndarray]
    unseen: int

    def __add__(self, other: ColumnCounts) -> ColumnCounts:
        histograms = [mine + theirs for mine, theirs in zip(self.histograms, other.histograms, strict=True)]
        return ColumnCounts(histograms, self.unseen + other.unseen)


@dataclass(frozen=True)
class NumericReference:
    """A numeric column at training: its range, its distinct inner decile edges and each decile bin's share.

    Bin i holds the values in (edge i-1, edge i]; the first bin everything up to the first inner edge, the last
    but one everything above the last, the last the missing, unreadable and infinite cells.
    """

    kind: ClassVar[str] = NumericColumn.kind
    name: str
    low: float
    high: float
    inner_edges: np.ndarray
    shares: np.ndarray

    @classmethod
    def from_training(cls, parsed: ParsedNumbers, rows: int) -> NumericReference:
        """Decile bins of the training values, and each bin's share of the training rows."""
        values = parsed.values[np.isfinite(parsed.values)]
        edges = np.quantile(values, _DECILES) if values.size else np.zeros(len(_DECILES))
        bins = cls(parsed.column.name, float(edges[0]), float(edges[-1]), np.unique(edges[1:-1]), np.zeros(0))
        return replace(bins, shares=bins.count(parsed).histograms[0] / rows)

    @property
    def histograms(self) -> list[Histogram]:
        """The column's one histogram."""
        edges = [f"{edge:.4g}" for edge in self.inner_edges]
        between = [f"{low} to {high}" for low, high in zip(edges[:-1], edges[1:], strict=False)]
        labels = [f"≤ {edges[0]}", *between, f"> {edges[-1]}"] if edges else ["all values"]
        return [Histogram("values", [*labels, _MISSING_LABEL], self.shares)]

    def count(self, parsed: ParsedColumn) -> ColumnCounts:
        """Count ``parsed``'s rows into the decile bins; values outside the training range are unseen."""
        assert isinstance(parsed, ParsedNumbers)
        values = parsed.values
        if parsed.missing.any():
            values = values[~parsed.missing]
        # One vectorised comparison per edge: several times faster than searchsorted for ten bins.
        at_most = [np.count_nonzero(values <= edge) for edge in self.inner_edges]
        counts = np.diff([0, *at_most, len(values), len(parsed.values)])
        unseen = 0
        if len(values) and (values.min() < self.low or values.max() > self.high):
            unseen = int(np.count_nonzero(values < self.low) + np.count_nonzero(values > self.high))
        return ColumnCounts([counts], unseen)


@dataclass(frozen=True)
class TextReference:
    """A text column at training: the share of each kept value, of "other" and of missing, and the values seen."""

    kind: ClassVar[str] = CategoricalColumn.kind
    name: str
    categories: list[str]
    seen: np.ndarray  # sorted hashes (``_hash_text``) of the values training rows had
    shares: np.ndarray

    @classmethod
    def from_training(cls, parsed: ParsedText, rows: int) -> TextReference:
        """Each kept value's share of the training rows, and the (hashed) set of values they had."""
        frequency = _distinct_frequency(parsed)[1:]
        occurring = min(MAX_SEEN_VALUES, int(np.count_nonzero(frequency)))
        most_frequent = np.argsort(-frequency, kind="stable")[:occurring]
        seen = np.sort(_hash_text(parsed.distinct[most_frequent]))
        values = cls(parsed.column.name, list(parsed.column.categories), seen, np.zeros(0))
        return replace(values, shares=values.count(parsed).histograms[0] / rows)

    @property
    def histograms(self) -> list[Histogram]:
        """The column's one histogram."""
        return [Histogram("values", [*self.categories, "other", _MISSING_LABEL], self.shares)]

    def count(self, parsed: ParsedColumn) -> ColumnCounts:
        """Count ``parsed``'s rows by kept value, "other" and missing, working on its distinct values only."""
        assert isinstance(parsed, ParsedText)
        by_distinct = _distinct_frequency(parsed)
        frequency = by_distinct[1:]
        counts = np.bincount(parsed.features, weights=frequency, minlength=len(self.categories) + 1)
        # Kept values were frequent in training: only the values counted as "other" can be new.
        other = np.flatnonzero((parsed.features == len(self.categories)) & (frequency > 0))
        unseen = 0
        if other.size:
            hashes = _hash_text(parsed.distinct[other])
            position = np.searchsorted(self.seen, hashes).clip(max=len(self.seen) - 1)
            seen = self.seen[position] == hashes if len(self.seen) else np.zeros(len(other), dtype=bool)
            unseen = int(frequency[other[~seen]].sum())
        return ColumnCounts([np.append(counts, by_distinct[0]).astype(np.int64)], unseen)


@dataclass(frozen=True)
class DateReference:
    """A date column at training: the share of rows per hour of the day and per weekday (each, then missing)."""

    kind: ClassVar[str] = DatetimeColumn.kind
    name: str
    hour_shares: np.ndarray
    weekday_shares: np.ndarray

    @classmethod
    def from_training(cls, parsed: ParsedDates, rows: int) -> DateReference:
        """Each hour's and each weekday's share of the training rows."""
        hours, weekdays = _date_bins(parsed)
        return cls(
            parsed.column.name, np.bincount(hours, minlength=25) / rows, np.bincount(weekdays, minlength=8) / rows
        )

    @property
    def histograms(self) -> list[Histogram]:
        """By hour of the day, then by weekday."""
        hours = [f"{hour:02d}:00" for hour in range(24)]
        return [
            Histogram("hour of day", [*hours, _MISSING_LABEL], self.hour_shares),
            Histogram("weekday", [*_WEEKDAYS, _MISSING_LABEL], self.weekday_shares),
        ]

    def count(self, parsed: ParsedColumn) -> ColumnCounts:
        """Count ``parsed``'s rows per hour and per weekday; dates at an hour or weekday training lacked are unseen."""
        assert isinstance(parsed, ParsedDates)
        hours, weekdays = _date_bins(parsed)
        # One count of (hour, weekday) pairs gives both histograms and the unseen dates; missing dates are (24, 7).
        pairs = np.bincount(hours * 8 + weekdays, minlength=25 * 8).reshape(25, 8)
        never_seen = (self.hour_shares[:24] == 0)[:, None] | (self.weekday_shares[:7] == 0)[None, :]
        return ColumnCounts([pairs.sum(axis=1), pairs.sum(axis=0)], int(pairs[:24, :7][never_seen].sum()))


ColumnReference = NumericReference | TextReference | DateReference
_REFERENCE_KINDS: dict[str, type[ColumnReference]] = {
    kind.kind: kind for kind in (NumericReference, TextReference, DateReference)
}


@dataclass(frozen=True)
class DriftReference:
    """The training rows' statistics for every column the model uses (stored in ``metadata.pkl``)."""

    rows: int
    columns: list[ColumnReference]

    @classmethod
    def from_training(cls, table: ParsedTable) -> DriftReference:
        """Statistics of all training rows, from the preprocessor's parse of them."""
        columns: list[ColumnReference] = []
        for parsed in table.columns:
            if isinstance(parsed, ParsedNumbers):
                columns.append(NumericReference.from_training(parsed, table.rows))
            elif isinstance(parsed, ParsedText):
                columns.append(TextReference.from_training(parsed, table.rows))
            else:
                columns.append(DateReference.from_training(parsed, table.rows))
        return cls(table.rows, columns)

    def to_metadata(self) -> dict[str, Any]:
        """Builtins and numpy arrays, for ``metadata.pkl``."""
        columns = [{"kind": column.kind, **{item.name: getattr(column, item.name) for item in fields(column)}}
                   for column in self.columns]  # fmt: skip
        return {"rows": self.rows, "columns": columns}

    @classmethod
    def from_metadata(cls, spec: dict[str, Any]) -> DriftReference:
        """The reference ``to_metadata`` stored."""
        columns = []
        for column in spec["columns"]:
            values = {key: value for key, value in column.items() if key != "kind"}
            columns.append(_REFERENCE_KINDS[column["kind"]](**values))
        return cls(int(spec["rows"]), columns)


@dataclass(frozen=True)
class DriftBin:
    """One bar of a column's drift chart: a bin's share of the training rows and of the rows analysed."""

    histogram: str  # values, hour of day or weekday (a date column has two charts), or missing
    label: str
    reference_share: float
    observed_share: float


@dataclass(frozen=True)
class ColumnDrift:
    """How one column of the analysed rows compares with the training rows."""

    name: str
    kind: str  # numeric, categorical (text and booleans) or datetime
    psi: float  # the largest of the column's histograms (dates have two: hour of day and weekday)
    unseen_share: float  # share of rows with a value no training row had
    missing_rate: float
    reference_missing_rate: float
    missing_rate_change: float
    level: str  # none, moderate or major; none when a difference this large is likely by chance at this many rows
    flagged: bool
    bins: list[DriftBin]


@dataclass(frozen=True)
class DriftReport:
    """The drift of one analysis: a verdict, what to do, and each column's figures (plain data)."""

    available: bool
    verdict: str  # fits, shifted, or unavailable (with the reason)
    reason: str | None
    advice: str | None
    summary: str
    rows: int
    reference_rows: int
    flagged_columns: list[str]
    columns: list[ColumnDrift] = field(default_factory=list)

    @classmethod
    def unavailable(cls, reason: str) -> DriftReport:
        """No drift figures, and why (e.g. a model trained before drift statistics were recorded)."""
        return cls(False, "unavailable", reason, None, f"Drift is unavailable: {reason}.", 0, 0, [])

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready builtins."""
        return asdict(self)


class DriftAccumulator:
    """Counts analysed rows into the model's reference histograms, a chunk at a time; ``report`` compares them.

    Give it each chunk the analysis scores: ``add(frame)`` parses the chunk itself, ``add_parsed`` takes the
    parse the detector already made (``TabularAnomalyDetector.score_details(chunk, drift=accumulator)``).
    Without a reference (a model trained before drift statistics), adding does nothing and the report says
    drift is unavailable; an analysis never fails because of drift.
    """

    def __init__(self, preprocessor: TablePreprocessor, reference: DriftReference | None) -> None:
        self._preprocessor = preprocessor
        self._reference = reference
        self._rows = 0
        self._counts: list[ColumnCounts] = []

    def add(self, frame: pd.DataFrame) -> None:
        """Count ``frame``'s rows (the columns the model uses; ``ColumnMismatchError`` if any is missing)."""
        if self._reference is not None:
            self.add_parsed(self._preprocessor.parse(frame))

    def add_parsed(self, table: ParsedTable) -> None:
        """Count a chunk the model's preprocessor parsed (``ValueError`` if another model's parsed it)."""
        if self._reference is None:
            return
        if [parsed.column.name for parsed in table.columns] != [column.name for column in self._reference.columns]:
            raise ValueError("These rows were parsed for another model: use the scoring model's drift_accumulator().")
        counts = [
            reference.count(parsed) for reference, parsed in zip(self._reference.columns, table.columns, strict=True)
        ]
        self._counts = counts if not self._counts else [a + b for a, b in zip(self._counts, counts, strict=True)]
        self._rows += table.rows

    def report(self) -> DriftReport:
        """Compare the rows counted so far with the training rows."""
        if self._reference is None:
            return DriftReport.unavailable(UNTRACKED_MODEL_REASON)
        if self._rows == 0:
            return DriftReport.unavailable(NO_ROWS_REASON)
        tests = sum(len(reference.histograms) for reference in self._reference.columns)
        columns = [
            _column_drift(reference, counts, self._rows, self._reference.rows, FALSE_ALARM_RATE / tests)
            for reference, counts in zip(self._reference.columns, self._counts, strict=True)
        ]
        flagged = [column for column in columns if column.flagged]
        if flagged:
            named = ", ".join(f"{column.name} ({column.level})" for column in flagged)
            verdict, advice = "shifted", RETRAIN_ADVICE
            summary = f"The data has shifted from the training data in {named}: {RETRAIN_ADVICE}."
        else:
            verdict, advice = "fits", None
            summary = "The data fits the training data: no column has shifted."
        return DriftReport(True, verdict, None, advice, summary, self._rows, self._reference.rows,
                           [column.name for column in flagged], columns)  # fmt: skip


def _column_drift(
    reference: ColumnReference, counts: ColumnCounts, rows: int, reference_rows: int, false_alarm_rate: float
) -> ColumnDrift:
    """One column's figures: PSI per histogram, judged by the cut-offs and by the chance of such a difference."""
    histograms = reference.histograms
    psis, levels = [], []
    for histogram, observed in zip(histograms, counts.histograms, strict=True):
        psi = population_stability(histogram.shares, observed / rows, rows, reference_rows)
        chance = chance_of_difference(histogram.shares, observed / rows, rows, reference_rows)
        psis.append(psi)
        levels.append(_level(psi) if chance < false_alarm_rate else "none")
    level = max(levels, key=_LEVELS.index)
    missing_rate = float(counts.histograms[0][-1] / rows)
    reference_missing_rate = float(histograms[0].shares[-1])
    bins = [
        DriftBin(histogram.name, label, share, observed_share)
        for histogram, observed in zip(histograms, counts.histograms, strict=True)
        for label, share, observed_share in zip(
            histogram.labels[:-1], histogram.shares[:-1].tolist(), (observed[:-1] / rows).tolist(), strict=True
        )
    ]
    bins.append(DriftBin(_MISSING_LABEL, _MISSING_LABEL, reference_missing_rate, missing_rate))
    return ColumnDrift(
        name=reference.name,
        kind=reference.kind,
        psi=max(psis),
        unseen_share=counts.unseen / rows,
        missing_rate=missing_rate,
        reference_missing_rate=reference_missing_rate,
        missing_rate_change=missing_rate - reference_missing_rate,
        level=level,
        flagged=level != "none",
        bins=bins,
    )


def population_stability(
    reference_shares: np.ndarray, observed_shares: np.ndarray, rows: int, reference_rows: int
) -> float:
    """PSI of observed against reference shares.

    Shares are floored at half a row of their sample (an empty bin is rare, not impossible); bins empty in
    both samples are left out.
    """
    used = (reference_shares > 0) | (observed_shares > 0)
    reference = np.maximum(reference_shares[used], 0.5 / reference_rows)
    observed = np.maximum(observed_shares[used], 0.5 / rows)
    return float(np.sum((observed - reference) * np.log(observed / reference)))


def chance_of_difference(
    reference_shares: np.ndarray, observed_shares: np.ndarray, rows: int, reference_rows: int
) -> float:
    """How likely two samples of one distribution differ this much: the chi-square test of homogeneity's p-value.

    Pearson's statistic over the bins either sample uses, with the pooled shares as expectation and
    (bins - 1) degrees of freedom.
    """
    pooled = (rows * observed_shares + reference_rows * reference_shares) / (rows + reference_rows)
    used = pooled > 0
    difference = observed_shares[used] - reference_shares[used]
    statistic = rows * reference_rows / (rows + reference_rows) * np.sum(difference * difference / pooled[used])
    return float(chdtrc(max(int(used.sum()) - 1, 1), statistic))


def _level(psi: float) -> str:
    if psi >= MAJOR_PSI:
        return "major"
    return "moderate" if psi >= MODERATE_PSI else "none"


def _date_bins(parsed: ParsedDates) -> tuple[np.ndarray, np.ndarray]:
    """Each row's hour (0-23) and weekday (0-6) bin; a missing date is in the last bin of both (24 and 7)."""
    return np.where(parsed.missing, 24, parsed.minute_of_day // 60), np.where(parsed.missing, 7, parsed.weekday)


def _distinct_frequency(parsed: ParsedText) -> np.ndarray:
    """Rows per distinct value, after the missing cells' count (code -1) in the first entry."""
    return np.bincount(parsed.codes + 1, minlength=len(parsed.distinct) + 1)


def _hash_text(values: np.ndarray) -> np.ndarray:
    """Stable 64-bit hashes of text values (the same in every process and pandas release's default key)."""
    hashes: np.ndarray = pd.util.hash_array(np.asarray(values, dtype=object))
    return hashes
