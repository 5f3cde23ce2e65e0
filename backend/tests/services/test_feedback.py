"""The feedback's pure parts: the threshold the labels suggest, and paging past labelled anomalies."""

from __future__ import annotations

import numpy as np
import pytest

from app.services.feedback import percentile_of, suggest_threshold, threshold_at, unlabelled_rank_at

# A model whose held-out training scores are 0..100 evenly: percentile p is at score p.
QUANTILES = np.linspace(0, 100, 1001).tolist()
ALL_SCORES = np.linspace(0, 200, 2001)


def _suggest(anomalies: list[float], normals: list[float], current: float = 95.0):
    return suggest_threshold(
        np.asarray(anomalies, dtype=float),
        np.asarray(normals, dtype=float),
        current_threshold=current,
        quantiles=QUANTILES,
        all_scores=ALL_SCORES,
    )


def test_no_labels_suggest_nothing() -> None:
    assert _suggest([], []) is None


def test_labels_that_agree_with_the_threshold_keep_it() -> None:
    suggestion = _suggest([97.0, 99.0], [10.0, 50.0])
    assert suggestion is not None
    assert suggestion.threshold_percentile == 95.0
    assert suggestion.misclassified_now == suggestion.misclassified_then == 0


def test_one_surprising_label_moves_the_threshold_only_a_little() -> None:
    suggestion = _suggest([], [99.5])  # one flagged row said to be expected
    assert suggestion is not None
    assert 95.0 < suggestion.threshold_percentile < 96.0


def test_more_labels_move_it_further_the_same_way() -> None:
    moves = []
    for count in (1, 5, 50):
        suggestion = _suggest([], [99.5] * count)  # flagged rows said to be expected, all scoring 99.5
        assert suggestion is not None
        moves.append(suggestion.threshold_percentile - 95.0)
    assert 0 < moves[0] < moves[1] < moves[2] <= 99.9 - 95.0
    assert moves[1] == pytest.approx(4.5 / 3, abs=0.1)  # five labels: a third of the way to 99.5


def test_missed_anomalies_lower_the_threshold() -> None:
    suggestion = _suggest([80.0, 85.0, 90.0] * 10, [10.0] * 20)
    assert suggestion is not None
    assert suggestion.threshold_percentile < 95.0
    assert suggestion.labelled_anomalies_flagged > 0 and suggestion.labelled_normals_flagged == 0
    assert suggestion.misclassified_then < suggestion.misclassified_now


def test_the_suggestion_says_how_many_rows_it_would_flag() -> None:
    suggestion = _suggest([], [99.0] * 50)
    assert suggestion is not None
    assert suggestion.rows_flagged == int((suggestion.threshold < ALL_SCORES).sum())
    assert suggestion.threshold == pytest.approx(threshold_at(suggestion.threshold_percentile, QUANTILES))


def test_percentiles_and_thresholds_are_inverse_on_the_grid() -> None:
    for percentile in (0.1, 50.0, 95.3, 99.9):
        assert percentile_of(threshold_at(percentile, QUANTILES), QUANTILES) == pytest.approx(percentile)


@pytest.mark.parametrize(
    ("offset", "labelled", "rank"),
    [(0, [], 0), (3, [], 3), (0, [0, 1], 2), (1, [0, 2], 3), (2, [5, 6], 2), (5, [5, 6], 7), (0, [1], 0)],
)
def test_the_nth_unlabelled_anomaly_skips_the_labelled_ranks(offset: int, labelled: list[int], rank: int) -> None:
    assert unlabelled_rank_at(offset, labelled) == rank
