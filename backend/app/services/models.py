"""The models a user can analyse with, as ``GET /api/anomaly/models`` lists them."""

from __future__ import annotations

from dataclasses import dataclass

from app.services.model_registry import ModelRegistry


@dataclass(frozen=True)
class ModelView:
    """A model as users see it: its name, columns, threshold and version."""

    name: str
    default: bool
    features: list[str]
    threshold: float
    threshold_percentile: float
    trained_at: str | None
    version: str
    training_rows: int | None
    dropped_columns: dict[str, str]


def list_models(registry: ModelRegistry) -> list[ModelView]:
    """The deployment's models, the default first."""
    return [
        ModelView(
            name=model.name,
            default=model.is_default,
            features=model.card.feature_names,
            threshold=model.card.threshold,
            threshold_percentile=model.card.threshold_percentile,
            trained_at=model.card.info["trained_at"],
            version=model.version,
            training_rows=model.card.info["training_rows"],
            dropped_columns=model.card.info["dropped_columns"],
        )
        for model in registry.models
    ]
