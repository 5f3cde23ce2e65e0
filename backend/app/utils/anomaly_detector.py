"""The tabular anomaly detector: an autoencoder trained once on normal rows, then used to score new files.

Score convention (the one place it is defined): ``decision_function`` returns one score per row, higher
means more anomalous; ``threshold = percentile(scores of held-out training rows, threshold_percentile)``;
``predict`` labels a row 1 (anomaly) when its score is above the threshold, else 0.

A row's score adds two calibrated parts, each divided by its median on held-out normal rows:
- the autoencoder's reconstruction error (root mean squared error over the encoded features: like the
  distance below, it grows linearly with a deviation, so neither part swamps the other), which also says
  which columns explain an anomaly, since every encoded feature belongs to one input column;
- the distance to the nearest normal row in the encoded input space, measured against a compact reference
  sample of the training rows. Reconstruction error alone ranks anomalies no better than an IsolationForest on
  the ADBench datasets; the neighbour distance is what lifts the ranking (see ``benchmarks/quality.py``).

TensorFlow is imported only when a model is built or loaded, so importing this module stays cheap.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from app.utils import model_store
from app.utils.drift import DriftAccumulator, DriftReference
from app.utils.preprocessing import ColumnMismatchError, TablePreprocessor

if TYPE_CHECKING:
    import keras

__all__ = ["ColumnMismatchError", "RowScores", "TabularAnomalyDetector", "detect_anomalies_in_excel"]

logger = logging.getLogger(__name__)

METADATA_FORMAT = 1
# The reference sample the neighbour distance is measured against: large enough to cover the normal data's
# modes, small enough that scoring 50,000 rows is one quick matrix product.
REFERENCE_ROWS = 1024
# Rows scored per compiled call: bounds the distance matrix to SCORING_BLOCK x REFERENCE_ROWS floats (32 MB).
SCORING_BLOCK = 8192
# The rows left after the whole blocks go through blocks this small when at most MAX_TAIL_BLOCKS of them
# suffice (a whole block costs about as much as four small ones), else through one padded whole block.
TAIL_BLOCK = 1024
MAX_TAIL_BLOCKS = 4
# The training-score distribution kept for re-thresholding is at most this many sorted scores.
STORED_SCORES = 20_000
MIN_TRAINING_ROWS = 100
# The seed's one-time training command (run from backend/): what every "no model" message tells users to run.
TRAINING_COMMAND = "python train_autoencoder_model.py data/normal_samples.xlsx"


def _keras() -> Any:
    import keras

    return keras


def _library_versions() -> dict[str, str]:
    import keras
    import sklearn
    import tensorflow as tf

    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }


@dataclass
class RowScores:
    """The scores of a table's rows and what they are made of (one entry or row per input row)."""

    scores: np.ndarray  # the anomaly score: higher = more anomalous
    reconstruction_error: np.ndarray  # the autoencoder's RMSE over the encoded features
    neighbour_distance: np.ndarray  # the distance to the nearest normal reference row
    column_errors: np.ndarray  # squared reconstruction error per input column (n_rows x len(feature_names))
    reconstruction: np.ndarray  # the autoencoder's output, in the encoded space

    def column_shares(self) -> np.ndarray:
        """Each input column's share of its row's reconstruction error (rows sum to 1)."""
        totals = self.column_errors.sum(axis=1, keepdims=True)
        return np.divide(self.column_errors, totals, out=np.zeros_like(self.column_errors), where=totals > 0)


class TabularAnomalyDetector:
    """Autoencoder anomaly detector for tables with numeric, text and date columns.

    ``__init__`` only stores settings; ``train`` or ``load`` set the learned state (trailing underscores).
    """

    def __init__(
        self, encoding_dim: int = 8, threshold_percentile: float = 95.0, random_state: int | None = None
    ) -> None:
        if encoding_dim < 1:
            raise ValueError("encoding_dim must be a positive integer")
        if not 0 < threshold_percentile < 100:
            raise ValueError("threshold_percentile must be between 0 and 100 (exclusive)")
        self.encoding_dim = encoding_dim
        self.threshold_percentile = float(threshold_percentile)
        self.random_state = random_state
        self.preprocessor_: TablePreprocessor | None = None
        self.model_: keras.Model | None = None
        self.reference_: np.ndarray | None = None
        self.score_scales_: np.ndarray | None = None
        self.training_scores_: np.ndarray | None = None
        self.threshold_: float | None = None
        self.history_: dict[str, list[float]] = {}
        self.drift_reference_: DriftReference | None = None
        self.metadata_: dict[str, Any] = {}
        self._scorers: dict[bool, Any] = {}  # compiled block scorers, without and with details

    # --- the seed's attributes -------------------------------------------------------------------------

    @property
    def is_trained(self) -> bool:
        """Whether the detector has a model to score with."""
        return self.model_ is not None

    @property
    def feature_names(self) -> list[str]:
        """The input columns the model uses (identifiers, constant and free-text columns are left out)."""
        return self._fitted_preprocessor().input_columns

    @property
    def threshold(self) -> float:
        """The score above which a row is an anomaly, at ``threshold_percentile``."""
        if self.threshold_ is None:
            raise RuntimeError("The detector is not trained: call train() or load() first.")
        return self.threshold_

    @property
    def dropped_columns(self) -> dict[str, str]:
        """Training columns left out of the model, with the reason for each."""
        return dict(self._fitted_preprocessor().dropped_columns_)

    @property
    def model_info(self) -> dict[str, Any]:
        """What a user needs to know about the loaded model."""
        return describe_model(
            self._fitted_preprocessor(),
            threshold=self.threshold,
            threshold_percentile=self.threshold_percentile,
            encoding_dim=self.encoding_dim,
            facts=self.metadata_,
        )

    # --- training --------------------------------------------------------------------------------------

    def train(
        self,
        df: pd.DataFrame,
        epochs: int = 50,
        batch_size: int = 64,
        validation_split: float = 0.2,
        verbose: int | str = "auto",
        callbacks: list[Any] | None = None,
    ) -> keras.callbacks.History:
        """Fit the encoding, the autoencoder and the score calibration on ``df`` (rows assumed normal).

        Early stopping watches the validation loss and restores the best weights. The threshold and the
        stored score distribution come from the validation rows, which the weights never trained on.
        ``callbacks`` are Keras callbacks run with early stopping (to follow the epochs, or stop).
        """
        if len(df) < MIN_TRAINING_ROWS:
            raise ValueError(f"Need at least {MIN_TRAINING_ROWS} rows to train, got {len(df)}.")
        if not 0 <= validation_split < 1:
            raise ValueError("validation_split must be in [0, 1)")
        # Fit the encoding before TensorFlow loads: a table with nothing to learn fails in milliseconds.
        preprocessor = TablePreprocessor().fit(df)
        keras = _keras()
        if self.random_state is not None:
            keras.utils.set_random_seed(self.random_state)
        rng = np.random.default_rng(self.random_state)

        self.preprocessor_ = preprocessor
        table = preprocessor.parse(df)
        self.drift_reference_ = DriftReference.from_training(table)
        encoded = preprocessor.encode(table)
        order = rng.permutation(len(encoded))
        n_validation = int(round(validation_split * len(encoded)))
        if 0 < n_validation < 20:
            n_validation = min(20, len(encoded) // 5)
        fit_rows, validation_rows = encoded[order[n_validation:]], encoded[order[:n_validation]]

        self.model_ = self._build_model(encoded.shape[1])
        callbacks = list(callbacks or [])
        validation_data = None
        if n_validation:
            validation_data = (validation_rows, validation_rows)
            callbacks.append(
                keras.callbacks.EarlyStopping(monitor="val_loss", patience=5, min_delta=1e-5, restore_best_weights=True)
            )
        history = self.model_.fit(
            fit_rows,
            fit_rows,
            epochs=epochs,
            batch_size=batch_size,
            validation_data=validation_data,
            shuffle=True,
            callbacks=callbacks,
            verbose=verbose,
        )
        self.history_ = {key: [float(value) for value in values] for key, values in history.history.items()}

        reference_size = min(REFERENCE_ROWS, len(fit_rows))
        self.reference_ = fit_rows[rng.choice(len(fit_rows), reference_size, replace=False)]
        calibration_rows = validation_rows if n_validation else fit_rows
        self._scorers = {}  # the model and reference rows changed
        reconstruction_error, distance = self._score_parts(calibration_rows, details=False)
        parts = np.column_stack([reconstruction_error, distance])
        medians = np.median(parts, axis=0)
        self.score_scales_ = np.where(medians > 0, medians, 1.0)
        calibration_scores = (parts / self.score_scales_).sum(axis=1)
        self.training_scores_ = _sorted_sample(calibration_scores, STORED_SCORES, rng)
        self.threshold_ = self.threshold_at(self.threshold_percentile)
        self.metadata_ = {
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "training_rows": len(df),
            "library_versions": _library_versions(),
        }
        return history

    def _build_model(self, n_features: int) -> keras.Model:
        keras = _keras()
        hidden = int(min(128, max(2 * self.encoding_dim, 2 * n_features)))
        inputs = keras.Input(shape=(n_features,), name="encoded_row")
        encoded = keras.layers.Dense(hidden, activation="relu", name="encoder_hidden")(inputs)
        code = keras.layers.Dense(self.encoding_dim, activation="relu", name="code")(encoded)
        decoded = keras.layers.Dense(hidden, activation="relu", name="decoder_hidden")(code)
        outputs = keras.layers.Dense(n_features, name="reconstruction")(decoded)
        model = keras.Model(inputs, outputs, name="tabular_autoencoder")
        # Many steps per call: on a CPU, Keras' per-step Python overhead otherwise dominates small batches.
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", steps_per_execution=32)
        return model

    # --- scoring ---------------------------------------------------------------------------------------

    def check_columns(self, columns: Any) -> list[str]:
        """Return the dataset's columns the model ignores; raise ``ColumnMismatchError`` naming missing ones."""
        return self._fitted_preprocessor().check_columns(columns)

    def missing_columns(self, columns: Any) -> list[str]:
        """The columns the model needs that ``columns`` lacks (empty when the dataset fits the model)."""
        return self._fitted_preprocessor().missing_columns(columns)

    def threshold_at(self, percentile: float) -> float:
        """The threshold for another percentile, from the stored training-score distribution (no retraining)."""
        if self.training_scores_ is None:
            raise RuntimeError("The detector is not trained: call train() or load() first.")
        return threshold_at_percentile(self.training_scores_, percentile)

    def drift_accumulator(self) -> DriftAccumulator:
        """A fresh drift accumulator for one analysis (its report says "unavailable" for a model without drift
        statistics); pass it to ``score_details`` with each chunk, then call its ``report``."""
        return DriftAccumulator(self._fitted_preprocessor(), self.drift_reference_)

    def decision_function(self, df: pd.DataFrame) -> np.ndarray:
        """One anomaly score per row of ``df``; higher is more anomalous."""
        reconstruction_error, distance = self._score_parts(self._fitted_preprocessor().transform(df), details=False)
        return self._combine(reconstruction_error, distance)

    def predict(self, df: pd.DataFrame, threshold: float | None = None) -> np.ndarray:
        """1 for rows scoring above ``threshold`` (default: the model's), else 0."""
        limit = self.threshold if threshold is None else threshold
        return (self.decision_function(df) > limit).astype(np.int64)

    def score_details(self, df: pd.DataFrame, drift: DriftAccumulator | None = None) -> RowScores:
        """Each row's score with its parts: what explains it, column by column.

        With ``drift`` (from ``drift_accumulator``), the rows are also counted into it, from the same parse.
        """
        preprocessor = self._fitted_preprocessor()
        table = preprocessor.parse(df)
        if drift is not None:
            drift.add_parsed(table)
        encoded = preprocessor.encode(table)
        reconstruction_error, distance, column_errors, reconstruction = self._score_parts(encoded, details=True)
        return RowScores(
            scores=self._combine(reconstruction_error, distance),
            reconstruction_error=reconstruction_error,
            neighbour_distance=distance,
            column_errors=column_errors,
            reconstruction=reconstruction,
        )

    def explain(self, details: RowScores, rows: Any, top_n: int = 3) -> list[list[dict[str, Any]]]:
        """The ``top_n`` columns behind each of ``rows`` (indices into ``details``), largest share first.

        Each entry has the ``column``, its ``share`` of the row's reconstruction error and, where a value makes
        sense (numbers, text), the value the model ``expected`` instead of the one it saw.
        """
        preprocessor = self._fitted_preprocessor()
        shares = details.column_shares()
        explanations = []
        for row in np.asarray(rows, dtype=np.int64):
            order = np.argsort(-shares[row], kind="stable")[:top_n]
            explanations.append(
                [
                    {
                        "column": preprocessor.columns_[column].name,
                        "share": float(shares[row, column]),
                        "expected": preprocessor.expected_value(int(column), details.reconstruction[row]),
                    }
                    for column in order
                    if shares[row, column] > 0
                ]
            )
        return explanations

    def _combine(self, reconstruction_error: np.ndarray, distance: np.ndarray) -> np.ndarray:
        assert self.score_scales_ is not None
        return (
            reconstruction_error.astype(np.float64) / self.score_scales_[0]
            + distance.astype(np.float64) / self.score_scales_[1]
        )

    def _score_parts(self, encoded: np.ndarray, details: bool) -> list[np.ndarray]:
        """RMSE and distance to the nearest reference row; with ``details``, also the per-column squared errors
        and the reconstruction.

        Rows go through a compiled TensorFlow function in blocks of two fixed sizes (compiled once per model and
        size), each block a few fused matrix products. Without ``details`` a function that computes and returns
        only the two scores is used: about a tenth faster.
        """
        if details not in self._scorers:
            self._scorers[details] = self._compile_scorer(details)
        n_rows, n_features = encoded.shape
        n_columns = len(self._fitted_preprocessor().columns_)
        shapes = [(), ()] + ([(n_columns,), (n_features,)] if details else [])
        parts = [np.empty((n_rows, *shape), dtype=np.float32) for shape in shapes]
        for start, size, block_size in _scoring_blocks(n_rows):
            block = encoded[start : start + size]
            if size < block_size:
                block = np.vstack([block, np.zeros((block_size - size, n_features), dtype=np.float32)])
            outputs = self._scorers[details](block)
            for part, output in zip(parts, outputs, strict=False):
                part[start : start + size] = output.numpy()[:size]
        return parts

    def _compile_scorer(self, details: bool) -> Any:
        """Build the compiled block scorer for the current model and reference rows, with or without details."""
        import tensorflow as tf

        if self.model_ is None or self.reference_ is None:
            raise RuntimeError("The detector is not trained: call train() or load() first.")
        model, n_features = self.model_, self.reference_.shape[1]
        # Features that are 0 in every reference row add nothing to q.r: the product leaves them out.
        used = np.flatnonzero((self.reference_ != 0).any(axis=0))
        reference = self.reference_[:, used]
        # |q - r|^2 = |q|^2 + |r|^2 - 2 q.r. One product gives |r|^2 - 2 q.r for every pair, with q extended by a 1
        # and r by |r|^2: adding |r|^2 to the product's output would take another pass over it, the slow part.
        extended_reference = tf.constant(
            np.vstack([-2.0 * reference.T, np.sum(reference * reference, axis=1)[None, :]]).astype(np.float32)
        )
        used_features = tf.constant(used)
        preprocessor = self._fitted_preprocessor()
        # Sums each column's encoded features: (n_features x n_columns) of 0/1.
        grouping = tf.constant(np.eye(len(preprocessor.columns_), dtype=np.float32)[preprocessor.feature_columns_])

        # One traced function; XLA compiles it once per block size it is called with (two) and caches both.
        @tf.function(jit_compile=True, autograph=False, input_signature=[tf.TensorSpec([None, n_features], tf.float32)])
        def score_block(block: Any) -> Any:
            reconstruction = model(block, training=False)
            squared_error = tf.square(block - reconstruction)
            ones = tf.ones([tf.shape(block)[0], 1])
            extended = tf.concat([tf.gather(block, used_features, axis=1), ones], axis=1)
            # The row's own |q|^2 is added after taking the minimum.
            nearest = tf.reduce_min(tf.matmul(extended, extended_reference), axis=1)
            nearest += tf.reduce_sum(block * block, axis=1)
            scores = (tf.sqrt(tf.reduce_mean(squared_error, axis=1)), tf.sqrt(tf.maximum(nearest, 0.0)))
            if not details:
                return scores
            return (*scores, tf.matmul(squared_error, grouping), reconstruction)

        return score_block

    def _fitted_preprocessor(self) -> TablePreprocessor:
        if self.preprocessor_ is None:
            raise RuntimeError("The detector is not trained: call train() or load() first.")
        return self.preprocessor_

    # --- persistence -----------------------------------------------------------------------------------

    def save(self, path: str | Path, training_report: bool = True) -> Path:
        """Write ``autoencoder.h5`` and ``metadata.pkl`` (and ``training_report.png``) to ``path`` atomically.

        A failed or interrupted save leaves any earlier model in ``path`` as it was.
        """
        if not self.is_trained:
            raise RuntimeError("Nothing to save: train the detector first.")

        def write(directory: Path) -> None:
            assert self.model_ is not None
            # The seed's layout needs autoencoder.h5; Keras' advice to switch formats is noise to our users.
            absl_logger = logging.getLogger("absl")
            level = absl_logger.level
            absl_logger.setLevel(logging.ERROR)
            try:
                self.model_.save(directory / model_store.MODEL_FILENAME)
            finally:
                absl_logger.setLevel(level)
            model_store.dump_metadata(self._metadata(), directory / model_store.METADATA_FILENAME)
            if training_report and self.history_:
                from app.utils.training_report import write_training_report

                write_training_report(self, directory / model_store.REPORT_FILENAME)

        saved = model_store.write_atomically(path, write)
        self.metadata_["version"] = model_store.model_version(saved)
        return saved

    def _metadata(self) -> dict[str, Any]:
        preprocessor = self._fitted_preprocessor()
        return {
            "format": METADATA_FORMAT,
            "encoding_dim": self.encoding_dim,
            "threshold_percentile": self.threshold_percentile,
            "threshold": self.threshold,
            **preprocessor.to_metadata(),
            "reference_rows": self.reference_,
            "score_scales": self.score_scales_,
            "training_scores": self.training_scores_,
            "history": self.history_,
            "drift_reference": None if self.drift_reference_ is None else self.drift_reference_.to_metadata(),
            **{key: value for key, value in self.metadata_.items() if key != "version"},
        }

    @classmethod
    def load(cls, path: str | Path) -> TabularAnomalyDetector:
        """Load a detector saved by ``save``; ``FileNotFoundError`` names a missing model file."""
        # Imported here: the model card builds on this module's threshold convention.
        from app.utils.model_card import ModelCard

        card = ModelCard.load(path)
        detector = cls(encoding_dim=card.encoding_dim, threshold_percentile=card.threshold_percentile)
        detector.preprocessor_ = card.preprocessor
        detector.reference_ = card.reference_rows
        detector.score_scales_ = card.score_scales
        detector.training_scores_ = card.training_scores
        detector.threshold_ = card.threshold
        detector.history_ = card.history
        detector.drift_reference_ = card.drift_reference
        detector.metadata_ = {
            "trained_at": card.trained_at,
            "training_rows": card.training_rows,
            "library_versions": card.library_versions,
            "version": card.version,
        }
        _warn_on_version_mismatch(card.library_versions, card.metadata_path)
        detector.model_ = _keras().models.load_model(card.model_path, compile=False)
        # Compile both scorers for both block sizes now, so the first file scored is as fast as the rest.
        for details in (False, True):
            for block_size in (SCORING_BLOCK, TAIL_BLOCK):
                detector._score_parts(np.zeros((block_size, card.reference_rows.shape[1]), np.float32), details=details)
        return detector


def threshold_at_percentile(training_scores: np.ndarray, percentile: float) -> float:
    """The score convention's threshold: ``percentile`` of the stored training scores (0 < percentile < 100)."""
    if not 0 < percentile < 100:
        raise ValueError("threshold percentile must be between 0 and 100 (exclusive)")
    return float(np.percentile(training_scores, percentile))


def describe_model(
    preprocessor: TablePreprocessor,
    *,
    threshold: float,
    threshold_percentile: float,
    encoding_dim: int,
    facts: dict[str, Any],
) -> dict[str, Any]:
    """What a user needs to know about a model, for ``model_info`` and ``ModelCard.info`` alike.

    ``facts`` holds what training recorded: ``trained_at``, ``training_rows``, ``version``, ``library_versions``.
    """
    return {
        "feature_names": preprocessor.input_columns,
        "dropped_columns": dict(preprocessor.dropped_columns_),
        "threshold": threshold,
        "threshold_percentile": threshold_percentile,
        "encoding_dim": encoding_dim,
        "trained_at": facts.get("trained_at"),
        "training_rows": facts.get("training_rows"),
        "version": facts.get("version"),
        "library_versions": facts.get("library_versions", {}),
    }


def _scoring_blocks(n_rows: int) -> list[tuple[int, int, int]]:
    """(first row, rows, block size) for each block that covers ``n_rows`` rows: whole blocks, then the rest."""
    blocks = []
    start = 0
    while start < n_rows:
        rest = n_rows - start
        block_size = TAIL_BLOCK if rest <= MAX_TAIL_BLOCKS * TAIL_BLOCK else SCORING_BLOCK
        blocks.append((start, min(rest, block_size), block_size))
        start += block_size
    return blocks


def _sorted_sample(values: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    if len(values) > size:
        values = rng.choice(values, size, replace=False)
    return np.sort(values.astype(np.float64))


def _warn_on_version_mismatch(saved: dict[str, str], metadata_path: Path) -> None:
    current = _library_versions()
    differing = [
        f"{name} {saved[name]} (now {current[name]})"
        for name in ("tensorflow", "keras", "scikit-learn")
        if name in saved and saved[name] != current[name]
    ]
    if differing:
        message = (
            f"{metadata_path} was written with {', '.join(differing)}; scores may differ slightly. "
            "Retrain the model to remove this warning."
        )
        logger.warning(message)
        warnings.warn(message, stacklevel=3)


def detect_anomalies_in_excel(
    df: pd.DataFrame,
    model_path: str | Path | None = None,
    train_if_needed: bool = True,
    threshold_percentile: float | None = None,
    detector: TabularAnomalyDetector | None = None,
) -> tuple[pd.DataFrame, TabularAnomalyDetector]:
    """Score ``df`` and return its anomalous rows (highest score first) with the detector used.

    The model comes from ``detector`` if given, else from ``model_path``; with neither (or no model files
    there) and ``train_if_needed`` the detector is trained on ``df`` itself (slow; the seed's old path).
    The returned rows keep their original index and gain ``anomaly_score``.
    """
    if detector is None and model_path is not None and Path(model_path).is_dir():
        detector = TabularAnomalyDetector.load(model_path)
    if detector is None:
        if not train_if_needed:
            raise ValueError(
                "No model provided and train_if_needed=False: train one with "
                f"`{TRAINING_COMMAND}` "
                f"(looked in {str(model_path)!r})."
            )
        detector = TabularAnomalyDetector()
        detector.train(df, verbose=0)
    scores = detector.decision_function(df)
    threshold = detector.threshold if threshold_percentile is None else detector.threshold_at(threshold_percentile)
    anomalous = np.flatnonzero(scores > threshold)
    anomalies = df.iloc[anomalous].copy()
    anomalies["anomaly_score"] = scores[anomalous]
    anomalies = anomalies.sort_values("anomaly_score", ascending=False, kind="stable")
    return anomalies, detector
