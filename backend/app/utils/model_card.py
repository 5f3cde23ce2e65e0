"""What a saved model says about itself, read from ``metadata.pkl`` alone: no TensorFlow, no Keras.

API processes select models and check a dataset's columns with cards; only job workers load detectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.utils import model_store
from app.utils.preprocessing import CategoricalColumn, DatetimeColumn, NumericColumn, TablePreprocessor

_COLUMN_KINDS = {"numeric": NumericColumn, "categorical": CategoricalColumn, "datetime": DatetimeColumn}


@dataclass(frozen=True)
class ModelCard:
    """A saved model's columns, threshold, training-score distribution and version."""

    directory: Path
    version: str
    preprocessor: TablePreprocessor
    threshold: float
    threshold_percentile: float
    training_scores: np.ndarray
    metadata: dict[str, Any]

    @classmethod
    def load(cls, directory: str | Path) -> ModelCard:
        """Read the card of the model in ``directory``; ``FileNotFoundError`` names a missing model file."""
        _, metadata_path = model_store.model_files(directory)
        metadata = model_store.load_metadata(metadata_path)
        preprocessor = TablePreprocessor()
        for spec in metadata["columns"]:
            fields = {key: value for key, value in spec.items() if key != "kind"}
            preprocessor.columns_.append(_COLUMN_KINDS[spec["kind"]](**fields))
        preprocessor.dropped_columns_ = dict(metadata["dropped_columns"])
        return cls(
            directory=Path(directory),
            version=model_store.model_version(directory),
            preprocessor=preprocessor,
            threshold=float(metadata["threshold"]),
            threshold_percentile=float(metadata["threshold_percentile"]),
            training_scores=np.asarray(metadata["training_scores"], dtype=np.float64),
            metadata=metadata,
        )

    @property
    def feature_names(self) -> list[str]:
        """The input columns the model uses."""
        return self.preprocessor.input_columns

    def check_columns(self, columns: Any) -> list[str]:
        """The dataset's columns the model ignores; ``ColumnMismatchError`` naming the missing ones."""
        return self.preprocessor.check_columns(columns)

    def missing_columns(self, columns: Any) -> list[str]:
        """The model's input columns that ``columns`` lacks."""
        return self.preprocessor.missing_columns(columns)

    def threshold_at(self, percentile: float) -> float:
        """The threshold at another percentile of the stored training scores."""
        if not 0 < percentile < 100:
            raise ValueError("threshold percentile must be between 0 and 100 (exclusive)")
        return float(np.percentile(self.training_scores, percentile))

    @property
    def info(self) -> dict[str, Any]:
        """What a user needs to know about the model (as ``TabularAnomalyDetector.model_info``)."""
        return {
            "feature_names": self.feature_names,
            "dropped_columns": dict(self.preprocessor.dropped_columns_),
            "threshold": self.threshold,
            "threshold_percentile": self.threshold_percentile,
            "encoding_dim": self.metadata.get("encoding_dim"),
            "trained_at": self.metadata.get("trained_at"),
            "training_rows": self.metadata.get("training_rows"),
            "version": self.version,
            "library_versions": self.metadata.get("library_versions", {}),
        }
