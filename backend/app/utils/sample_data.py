"""Generated tables shaped like the seed's data: an id, a timestamp, numbers on different scales, text columns.

Used for the demo model that `make run` trains, for tests and for benchmarks: nothing is downloaded.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

REGIONS = ("north", "south", "east", "west")
CHANNELS = ("web", "store", "phone")


def make_normal_transactions(n_rows: int, seed: int = 0, n_columns: int = 20) -> pd.DataFrame:
    """Return ``n_rows`` rows of plausible, correlated "normal" transactions with ``n_columns`` columns.

    The columns are ``id``, ``timestamp``, ``region``, ``channel`` and ``n_columns - 4`` numeric columns
    ``value1``... whose values depend on a few shared latent factors, so an autoencoder has structure to learn.
    """
    if n_columns < 5:
        raise ValueError("n_columns must be at least 5 (id, timestamp, region, channel and one value)")
    rng = np.random.default_rng(seed)
    n_values = n_columns - 4
    region_index = rng.integers(0, len(REGIONS), n_rows)
    channel_index = rng.choice(len(CHANNELS), n_rows, p=[0.6, 0.3, 0.1])
    latent = rng.normal(size=(n_rows, 3))
    latent[:, 0] += region_index * 0.5
    mixing = np.random.default_rng(1234).normal(size=(3, n_values))
    scales = np.logspace(0, 4, n_values)
    values = (latent @ mixing + 0.1 * rng.normal(size=(n_rows, n_values))) * scales + 5 * scales
    start = np.datetime64("2025-01-01T00:00:00")
    # Business hours on weekdays: the hour and day of week carry signal the detector can learn.
    days = rng.integers(0, 365, n_rows)
    hours = np.clip(rng.normal(13, 2.5, n_rows), 8, 19).astype(int)
    timestamps = start + days.astype("timedelta64[D]") + hours.astype("timedelta64[h]")
    frame = pd.DataFrame(
        {
            "id": np.arange(1, n_rows + 1),
            "timestamp": pd.to_datetime(timestamps),
            "region": np.asarray(REGIONS)[region_index],
            "channel": np.asarray(CHANNELS)[channel_index],
        }
    )
    for column in range(n_values):
        frame[f"value{column + 1}"] = np.round(values[:, column], 2)
    return frame


def inject_anomalies(frame: pd.DataFrame, fraction: float = 0.02, seed: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
    """Return a copy of ``frame`` with ``fraction`` of its rows made anomalous, and the 0/1 labels.

    Each anomalous row has one numeric column pushed far outside its usual range.
    """
    rng = np.random.default_rng(seed)
    result = frame.copy()
    labels = np.zeros(len(frame), dtype=np.int64)
    value_columns = [column for column in frame.columns if column.startswith("value")]
    rows = rng.choice(len(frame), max(1, int(len(frame) * fraction)), replace=False)
    for row in rows:
        column = value_columns[rng.integers(len(value_columns))]
        spread = frame[column].std()
        result.loc[row, column] = frame[column].iloc[row] + rng.choice([-1, 1]) * 8 * spread
        labels[row] = 1
    return result, labels
