"""What a model folder says about its model, read from ``metadata.pkl`` alone: no TensorFlow, no Keras.

Processes that only describe, choose and check models (the API) read a ``ModelCard``; only processes that
score load the Keras model (``TabularAnomalyDetector.load``, which builds on the card, so ``metadata.pkl``
is parsed in one place). The threshold convention stays the detector module's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.utils import model_store
from app.utils.anomaly_detector import METADATA_FORMAT, describe_model, threshold_at_percentile
from app.utils.drift import DriftAccumulator, DriftReference
from app.utils.preprocessing import TablePreprocessor


@dataclass(frozen=True)
class ModelCard:
    """A saved model's metadata: its columns, threshold, score distribution, training facts and drift reference."""

    directory: Path
    model_path: Path
    metadata_path: Path
    version: str  # content hash of the model files (``model_store.model_version``)
    preprocessor: TablePreprocessor
    encoding_dim: int
    threshold: float
    threshold_percentile: float
    training_scores: np.ndarray
    reference_rows: np.ndarray
    score_scales: np.ndarray
    history: dict[str, list[float]]
    trained_at: str | None
    training_rows: int | None
    library_versions: dict[str, str]
    drift_reference: DriftReference | None  # None for a model trained before drift statistics were recorded

    @classmethod
    def load(cls, directory: str | Path) -> ModelCard:
        """Read ``directory``'s ``metadata.pkl`` (restricted unpickler) and hash its model files.

        ``FileNotFoundError`` names a missing model file; a metadata format this version does not read is a
        ``ValueError`` that says to retrain.
        """
        model_path, metadata_path = model_store.model_files(directory)
        metadata = model_store.load_metadata(metadata_path)
        if metadata.get("format") != METADATA_FORMAT:
            raise ValueError(
                f"{metadata_path} has metadata format {metadata.get('format')!r}, this version reads "
                f"{METADATA_FORMAT}: retrain the model with train_autoencoder_model.py."
            )
        drift_reference = metadata.get("drift_reference")
        return cls(
            directory=Path(directory),
            model_path=model_path,
            metadata_path=metadata_path,
            version=model_store.model_version(directory),
            preprocessor=TablePreprocessor.from_metadata(metadata),
            encoding_dim=int(metadata["encoding_dim"]),
            threshold=float(metadata["threshold"]),
            threshold_percentile=float(metadata["threshold_percentile"]),
            training_scores=np.asarray(metadata["training_scores"], dtype=np.float64),
            reference_rows=np.ascontiguousarray(metadata["reference_rows"], dtype=np.float32),
            score_scales=np.asarray(metadata["score_scales"], dtype=np.float64),
            history=dict(metadata.get("history", {})),
            trained_at=metadata.get("trained_at"),
            training_rows=metadata.get("training_rows"),
            library_versions=dict(metadata.get("library_versions", {})),
            drift_reference=None if drift_reference is None else DriftReference.from_metadata(drift_reference),
        )

    @property
    def feature_names(self) -> list[str]:
        """The input columns the model uses."""
        return self.preprocessor.input_columns

    @property
    def dropped_columns(self) -> dict[str, str]:
        """Training columns left out of the model, with the reason for each."""
        return dict(self.preprocessor.dropped_columns_)

    def check_columns(self, columns: Any) -> list[str]:
        """Return the dataset's columns the model ignores; raise ``ColumnMismatchError`` naming missing ones."""
        return self.preprocessor.check_columns(columns)

    def missing_columns(self, columns: Any) -> list[str]:
        """The columns the model needs that ``columns`` lacks (empty when the dataset fits the model)."""
        return self.preprocessor.missing_columns(columns)

    def threshold_at(self, percentile: float) -> float:
        """The threshold at another percentile of the stored training scores (the detector's convention)."""
        return threshold_at_percentile(self.training_scores, percentile)

    def drift_accumulator(self) -> DriftAccumulator:
        """A fresh drift accumulator for one analysis with this model (reports "unavailable" without statistics)."""
        return DriftAccumulator(self.preprocessor, self.drift_reference)

    @property
    def info(self) -> dict[str, Any]:
        """What a user needs to know about the model: the keys of ``TabularAnomalyDetector.model_info``."""
        facts = {
            "trained_at": self.trained_at,
            "training_rows": self.training_rows,
            "version": self.version,
            "library_versions": self.library_versions,
        }
        return describe_model(
            self.preprocessor,
            threshold=self.threshold,
            threshold_percentile=self.threshold_percentile,
            encoding_dim=self.encoding_dim,
            facts=facts,
        )
