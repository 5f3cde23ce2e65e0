"""Tables with every column kind the preprocessor handles, and the awkward cells real spreadsheets hold.

Shared by the preprocessing tests and ``model_before_drift/`` (a model saved by an earlier version, with what
that version computed for ``mixed_scoring_frame``), so both always describe the same rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from app.utils.sample_data import make_normal_transactions

# A model saved by the version before drift statistics, with the matrices and scores it computed (make_fixture.py).
MODEL_BEFORE_DRIFT = Path(__file__).resolve().parent / "model_before_drift"


def mixed_training_frame(rows: int = 400, seed: int = 3) -> pd.DataFrame:
    """The demo schema plus dates written as text, booleans, numbers written as text, and a few gaps."""
    frame = make_normal_transactions(rows, seed=seed)
    rng = np.random.default_rng(seed)
    booked = frame["timestamp"] - pd.to_timedelta(rng.integers(0, 48, rows), unit="h")
    frame["booked"] = booked.dt.strftime("%Y/%m/%d %H:%M")
    frame["approved"] = rng.random(rows) < 0.8
    frame["quantity"] = pd.Series(rng.integers(1, 50, rows).astype(str), dtype=object)
    frame.loc[rng.choice(rows, 20, replace=False), "value3"] = np.nan
    frame.loc[rng.choice(rows, 10, replace=False), "channel"] = None
    return frame


def mixed_scoring_frame(rows: int = 300, seed: int = 12) -> pd.DataFrame:
    """New rows for a model trained on ``mixed_training_frame``, with every kind of cell that must not break it.

    Dates trained as real dates arrive as text and vice versa; numbers arrive as text, infinite or unreadable;
    text columns get values never seen in training and gaps; booleans get gaps.
    """
    frame = mixed_training_frame(rows, seed=seed)
    rng = np.random.default_rng(seed + 1)
    rows_at = rng.choice(rows, 40, replace=False)
    text_dates = frame["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S").astype(object)
    text_dates.iloc[rows_at[:3]] = ["not a date", None, "2025-13-45 99:00:00"]
    frame["timestamp"] = text_dates
    frame["booked"] = pd.to_datetime(frame["booked"], format="%Y/%m/%d %H:%M")
    frame.loc[rows_at[3:5], "booked"] = pd.NaT
    value2 = frame["value2"].astype(object)
    value2.iloc[rows_at[5:10]] = [np.inf, -np.inf, "123.5", "n/a", None]
    frame["value2"] = value2
    frame.loc[rows_at[10:14], "value7"] = [np.nan, np.inf, 1e300, -1e300]
    region = frame["region"].astype(object)
    region.iloc[rows_at[14:20]] = ["atlantis", "atlantis", None, "North", " north", "(missing)"]
    frame["region"] = region
    approved = frame["approved"].astype(object)
    approved.iloc[rows_at[20:23]] = [None, None, "yes"]
    frame["approved"] = approved
    frame["quantity"] = pd.to_numeric(frame["quantity"]).astype("int64")
    return frame
