"""Training a model from a table of normal rows: the one function the training CLI and the service's
trainings both call, so a model trained either way has the same files and the same quality.

It writes the seed's folder layout (``autoencoder.h5``, ``metadata.pkl``, ``training_report.png``) atomically,
and runs the seed's validation check: the share of the training rows the new model flags, with the 1-10%
verdict. TensorFlow loads only once training starts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from app.utils.anomaly_detector import MIN_TRAINING_ROWS, TabularAnomalyDetector

# The seed's acceptable anomaly rate on the training data, in percent.
ACCEPTABLE_RATE = (1.0, 10.0)
Verdict = Literal["good", "high", "low"]


class TooFewRowsError(ValueError):
    """The table has fewer usable rows than a model needs."""


@dataclass(frozen=True)
class TrainingParameters:
    """How a model is trained (the CLI's flags; the defaults are the seed's)."""

    encoding_dim: int = 8
    threshold_percentile: float = 95.0
    epochs: int = 50
    batch_size: int = 64
    validation_split: float = 0.2
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The parameters as plain values (to record with a model)."""
        return asdict(self)


@dataclass(frozen=True)
class EpochReport:
    """The state of a training after one epoch."""

    epoch: int  # 1-based
    epochs: int
    loss: float
    val_loss: float | None


@dataclass(frozen=True)
class ValidationCheck:
    """The seed's check: how many training rows the new model flags, and whether that rate is plausible."""

    anomaly_count: int
    row_count: int
    rate_percent: float
    verdict: Verdict

    @property
    def message(self) -> str:
        """The verdict as the CLI prints it, with what to do when the rate is off."""
        low, high = ACCEPTABLE_RATE
        if self.verdict == "good":
            return f"Good! Anomaly rate is within acceptable range ({low:g}-{high:g}%)."
        if self.verdict == "high":
            return (
                f"Anomaly rate is above {high:g}%: the training data may hold many anomalies. "
                "Train on cleaner data or raise the threshold percentile."
            )
        return (
            f"Anomaly rate is below {low:g}%: the model may not be sensitive enough. "
            "Lower the threshold percentile or raise the encoding dimension."
        )

    def to_dict(self) -> dict[str, Any]:
        """The check as plain values, with its message."""
        return {**asdict(self), "message": self.message}


@dataclass(frozen=True)
class TrainedModel:
    """What a training made: the detector, where it was saved, and how it went."""

    detector: TabularAnomalyDetector
    directory: Path
    epochs_run: int
    validation: ValidationCheck


def usable_rows(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """``frame`` without fully empty rows; ``TooFewRowsError`` (naming ``source``) if too few rows are left."""
    rows = frame.dropna(how="all")
    if len(rows) < MIN_TRAINING_ROWS:
        raise TooFewRowsError(too_few_rows_message(source, len(rows)))
    return rows


def too_few_rows_message(source: str, row_count: int) -> str:
    """The CLI's message for a table too small to train on."""
    return (
        f"{source} has {row_count} usable rows; at least {MIN_TRAINING_ROWS} normal rows are needed "
        "(10,000+ recommended)."
    )


def train_model(
    frame: pd.DataFrame,
    output_dir: str | Path,
    parameters: TrainingParameters,
    *,
    on_epoch: Callable[[EpochReport], None] | None = None,
    verbose: int | str = 0,
) -> TrainedModel:
    """Train a detector on ``frame`` (rows taken as normal), save it to ``output_dir`` and check it.

    ``on_epoch`` is told each epoch's losses as training runs, and may raise to stop it (nothing is saved then).
    A failed or interrupted run leaves any earlier model in ``output_dir`` as it was.
    """
    detector = TabularAnomalyDetector(
        encoding_dim=parameters.encoding_dim,
        threshold_percentile=parameters.threshold_percentile,
        random_state=parameters.seed,
    )
    callbacks = [] if on_epoch is None else [_epoch_callback(on_epoch, parameters.epochs)]
    history = detector.train(
        frame,
        epochs=parameters.epochs,
        batch_size=parameters.batch_size,
        validation_split=parameters.validation_split,
        verbose=verbose,
        callbacks=callbacks,
    )
    saved = detector.save(output_dir)
    return TrainedModel(detector, saved, len(history.history["loss"]), validation_check(detector, frame))


def validation_check(detector: TabularAnomalyDetector, frame: pd.DataFrame) -> ValidationCheck:
    """The share of ``frame``'s rows the detector flags, with the seed's verdict."""
    anomaly_count = int(detector.predict(frame).sum())
    rate = 100.0 * anomaly_count / len(frame)
    low, high = ACCEPTABLE_RATE
    verdict: Verdict = "good" if low <= rate <= high else ("high" if rate > high else "low")
    return ValidationCheck(anomaly_count, len(frame), rate, verdict)


def _epoch_callback(on_epoch: Callable[[EpochReport], None], epochs: int) -> Any:
    """A Keras callback that reports each epoch (Keras is imported here, when training starts)."""
    import keras

    class ReportEpochs(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            logs = logs or {}
            val_loss = logs.get("val_loss")
            on_epoch(EpochReport(epoch + 1, epochs, float(logs.get("loss", float("nan"))), _float(val_loss)))

    return ReportEpochs()


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)
