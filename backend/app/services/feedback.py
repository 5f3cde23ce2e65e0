"""Analysts' feedback on anomalies: labels on rows, what they say of the analysis, and the threshold they suggest.

A label belongs to the dataset's row (``anomaly``: a real anomaly; ``normal``: expected), so it survives
re-analysis. The feedback compares the labels with the latest analysis: how many flagged rows were labelled
real (precision), and which ``threshold_percentile`` would best separate the rows labelled anomaly from those
labelled normal.

The suggestion rule (``suggest_threshold``): among thresholds that put each labelled score on either side (and
the current threshold), take the one that misclassifies the fewest labelled rows (an anomaly at or below it, a
normal row above it), the nearest to the current threshold among equals. Then move only part of the way there,
by ``n / (n + LABELS_FOR_HALF_WAY)`` for ``n`` labels: one label moves the percentile a little, five a third of the
way, fifty most of the way, so a single surprising label never swings the threshold. Percentiles are those of the
model's held-out training scores, rounded to 0.1 and kept between 0.1 and 99.9.
"""

from __future__ import annotations

import asyncio
import bisect
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np

from app.core.config import Settings
from app.core.errors import LabelRequestError, QuotaExceededError
from app.crud import anomaly_pages, labels
from app.crud.analyses import Analysis
from app.crud.datasets import Dataset
from app.crud.labels import Label, RowLabel
from app.db.collections import Database
from app.services import analysis_results
from app.services import datasets as dataset_service
from app.services.scoring import rank_anomalies

# How many labels it takes to move the suggested percentile half-way to the labels' best one.
LABELS_FOR_HALF_WAY = 10
LOWEST_PERCENTILE, HIGHEST_PERCENTILE = 0.1, 99.9
_PERCENTILES = np.linspace(0, 100, 1001)
# Which anomalies a listing keeps, by their rows' labels.
LabelFilter = Literal["unlabelled", "anomaly", "normal"]


@dataclass(frozen=True)
class LabelView:
    """A row's label as its owner set it (``label`` is ``None`` once cleared)."""

    row: int
    label: Label | None
    note: str | None
    updated_at: datetime | None


@dataclass(frozen=True)
class Suggestion:
    """A threshold percentile that separates the labelled rows better, and what it would flag."""

    threshold_percentile: float
    threshold: float
    labelled_anomalies_flagged: int
    labelled_normals_flagged: int
    rows_flagged: int
    misclassified_now: int
    misclassified_then: int


async def set_label(
    database: Database, settings: Settings, dataset: Dataset, *, row: int, label: Label | None, note: str | None
) -> LabelView:
    """Label one of the dataset's rows (``None`` clears its label)."""
    if not 0 <= row < dataset.row_count:
        raise LabelRequestError(
            f"Row {row} is not in the dataset: its rows are numbered 0 to {dataset.row_count - 1} (the row "
            "numbers the anomalies listing gives)."
        )
    if label is None:
        await labels.clear(database, dataset_id=dataset.id, row=row)
        return LabelView(row, None, None, None)
    existing = await labels.for_rows(database, dataset.id, [row])
    if row not in existing and await labels.count(database, dataset.id) >= settings.max_labels_per_dataset:
        raise QuotaExceededError(
            f"This dataset has {settings.max_labels_per_dataset:,} labelled rows, the most allowed: clear labels "
            'you no longer need (PUT .../rows/{row}/label with {"label": null}).'
        )
    stored = await labels.put(database, dataset_id=dataset.id, row=row, label=label, note=note)
    return _view(stored)


def _view(stored: RowLabel) -> LabelView:
    return LabelView(stored.row, stored.label, stored.note, stored.updated_at)


def with_labels(items: list[dict[str, Any]], row_labels: dict[int, RowLabel]) -> list[dict[str, Any]]:
    """Anomalies with their rows' labels and notes added."""
    labelled = []
    for item in items:
        stored = row_labels.get(item["row"])
        labelled.append({**item, "label": stored.label if stored else None, "note": stored.note if stored else None})
    return labelled


def unlabelled_rank_at(offset: int, labelled_ranks: list[int]) -> int:
    """The rank of the ``offset``-th unlabelled anomaly (0-based), given the sorted ranks of the labelled ones."""
    low, high = offset, offset + len(labelled_ranks)
    while low < high:  # the smallest rank r with ``offset + 1`` unlabelled ranks at or below it
        middle = (low + high) // 2
        if middle + 1 - bisect.bisect_right(labelled_ranks, middle) >= offset + 1:
            high = middle
        else:
            low = middle + 1
    return low


def percentile_of(score: float, quantiles: list[float]) -> float:
    """Which percentile of the model's training scores ``score`` is at."""
    return float(np.interp(score, quantiles, _PERCENTILES))


def threshold_at(percentile: float, quantiles: list[float]) -> float:
    """The training score at ``percentile`` (the threshold an analysis at that percentile uses)."""
    return float(np.interp(percentile, _PERCENTILES, quantiles))


def suggest_threshold(
    anomaly_scores: np.ndarray,
    normal_scores: np.ndarray,
    *,
    current_threshold: float,
    quantiles: list[float],
    all_scores: np.ndarray,
) -> Suggestion | None:
    """The threshold percentile the labels suggest (see the module's docstring); ``None`` without labels."""
    labelled = len(anomaly_scores) + len(normal_scores)
    if labelled == 0:
        return None

    def misclassified(threshold: float) -> int:
        return int((anomaly_scores <= threshold).sum() + (normal_scores > threshold).sum())

    scores = np.unique(np.concatenate([anomaly_scores, normal_scores]))
    candidates = [current_threshold, *scores.tolist(), float(np.nextafter(scores[0], -np.inf))]
    current = percentile_of(current_threshold, quantiles)
    best = min(
        candidates, key=lambda threshold: (misclassified(threshold), abs(percentile_of(threshold, quantiles) - current))
    )
    weight = labelled / (labelled + LABELS_FOR_HALF_WAY)
    percentile = current + weight * (percentile_of(best, quantiles) - current)
    # On the 0.1 grid of the stored quantiles, where an analysis at that percentile has exactly this threshold.
    percentile = round(min(max(percentile, LOWEST_PERCENTILE), HIGHEST_PERCENTILE), 1)
    threshold = threshold_at(percentile, quantiles)
    return Suggestion(
        threshold_percentile=percentile,
        threshold=threshold,
        labelled_anomalies_flagged=int((anomaly_scores > threshold).sum()),
        labelled_normals_flagged=int((normal_scores > threshold).sum()),
        rows_flagged=int((all_scores > threshold).sum()),
        misclassified_now=misclassified(current_threshold),
        misclassified_then=misclassified(threshold),
    )


@dataclass(frozen=True)
class FeedbackView:
    """What the labels say of the dataset's latest analysis."""

    session_id: str
    threshold: float
    threshold_percentile: float
    labelled_anomalies: int
    labelled_normals: int
    flagged_anomalies: int  # rows labelled anomaly that the analysis flagged
    flagged_normals: int  # rows labelled normal that the analysis flagged
    precision: float | None  # of the flagged rows that are labelled, the share labelled anomaly
    suggestion: Suggestion | None
    advice: str


async def summary(database: Database, dataset: Dataset) -> FeedbackView:
    """The labels' counts, the precision of the flagged rows among them, and the threshold they suggest."""
    analysis = await dataset_service.analysed(database, dataset)
    scores = await analysis_results.read_scores(database, analysis)
    stored = await labels.for_dataset(database, dataset.id)
    in_range = [label for label in stored if label.row < len(scores)]
    anomaly_scores = scores[[label.row for label in in_range if label.label == Label.ANOMALY]]
    normal_scores = scores[[label.row for label in in_range if label.label == Label.NORMAL]]
    threshold = analysis.threshold or 0.0
    flagged_anomalies = int((anomaly_scores > threshold).sum())
    flagged_normals = int((normal_scores > threshold).sum())
    flagged = flagged_anomalies + flagged_normals
    suggestion = None
    if analysis.training_score_quantiles:
        suggestion = suggest_threshold(
            anomaly_scores,
            normal_scores,
            current_threshold=threshold,
            quantiles=analysis.training_score_quantiles,
            all_scores=scores,
        )
    return FeedbackView(
        session_id=analysis.id,
        threshold=threshold,
        threshold_percentile=analysis.threshold_percentile,
        labelled_anomalies=len(anomaly_scores),
        labelled_normals=len(normal_scores),
        flagged_anomalies=flagged_anomalies,
        flagged_normals=flagged_normals,
        precision=flagged_anomalies / flagged if flagged else None,
        suggestion=suggestion,
        advice=_advice(suggestion, analysis.threshold_percentile, dataset.id),
    )


def _advice(suggestion: Suggestion | None, percentile: float, dataset_id: str) -> str:
    if suggestion is None:
        return (
            "Label some flagged rows (real anomaly, or expected) with PUT "
            f"/api/anomaly/datasets/{dataset_id}/rows/{{row}}/label to get a suggested threshold."
        )
    if suggestion.threshold_percentile == round(percentile, 1):
        return "The labels agree with the current threshold: keep it."
    return (
        f"Analyse again with threshold_percentile {suggestion.threshold_percentile:g} "
        f'(POST /api/anomaly/datasets/{dataset_id}/analyze {{"threshold_percentile": '
        f"{suggestion.threshold_percentile:g}}}) to apply it."
    )


async def labelled_page(
    database: Database, analysis: Analysis, *, label_filter: LabelFilter, offset: int, limit: int
) -> tuple[int, list[dict[str, Any]]]:
    """The total and a page of the analysis's anomalies whose rows are labelled as ``label_filter`` asks."""
    scores = await analysis_results.read_scores(database, analysis)
    ranking = await asyncio.to_thread(rank_anomalies, scores, analysis.threshold or 0.0)
    rank_of = np.full(len(scores), -1, dtype=np.int64)
    rank_of[ranking] = np.arange(len(ranking))
    stored = await labels.for_dataset(database, analysis.dataset_id)
    ranked = sorted(
        (int(rank_of[label.row]), label.label)
        for label in stored
        if label.row < len(scores) and rank_of[label.row] >= 0
    )
    if label_filter == "unlabelled":
        labelled_ranks = [rank for rank, _ in ranked]
        total = len(ranking) - len(labelled_ranks)
        rank = unlabelled_rank_at(offset, labelled_ranks)
        skip = set(labelled_ranks)
        items: list[dict[str, Any]] = []
        while len(items) < limit and rank < len(ranking):
            window = await anomaly_pages.read_range(database, analysis.id, analysis.results_attempt, rank, limit)
            items += [item for position, item in enumerate(window, start=rank) if position not in skip]
            rank += len(window)
        return total, items[:limit]
    wanted = [rank for rank, label in ranked if label.value == label_filter]
    page = wanted[offset : offset + limit]
    return len(wanted), await anomaly_pages.read_ranks(database, analysis.id, analysis.results_attempt, page)
