"""The trained models this process serves: loaded once at startup, shared by every request and job.

The default model is ``AUTOENCODER_MODEL_PATH``; every other sub-folder of ``MODELS_DIR`` holding a model is
served too, under its folder's name. Without a default model the service still starts and says why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.config import TRAINING_COMMAND, Settings
from app.core.errors import ModelUnavailableError, UnknownModelError
from app.utils import model_store
from app.utils.anomaly_detector import TabularAnomalyDetector

logger = logging.getLogger(__name__)

# The model_version of sessions that train on their own dataset (AUTOENCODER_FALLBACK_TRAIN=true).
FALLBACK_VERSION = "fallback-training"


@dataclass(frozen=True)
class LoadedModel:
    """A detector with the name it is served under."""

    name: str
    path: Path
    detector: TabularAnomalyDetector
    is_default: bool

    @property
    def version(self) -> str:
        """Content hash of the model files: a retrained model is a new version."""
        return str(self.detector.model_info["version"])

    @property
    def info(self) -> dict[str, Any]:
        """Name-independent facts about the model (features, threshold, training date, version...)."""
        return self.detector.model_info


class ModelRegistry:
    """The loaded models, by name, and which one analyses use by default."""

    def __init__(
        self, models: list[LoadedModel], default_path: Path, default_problem: str | None, fallback_train: bool
    ) -> None:
        self._models = {model.name: model for model in models}
        self.default_path = default_path
        self.default_problem = default_problem
        self.fallback_train = fallback_train

    @classmethod
    def load(cls, settings: Settings) -> ModelRegistry:
        """Load the default model and every model under ``MODELS_DIR`` (blocking: TensorFlow loads here)."""
        default_path = settings.model_path
        models: list[LoadedModel] = []
        default_problem: str | None = None
        try:
            models.append(LoadedModel(default_path.name, default_path, TabularAnomalyDetector.load(default_path), True))
        except FileNotFoundError as error:
            default_problem = f"No model at {default_path} ({error})."
        except Exception as error:  # a damaged or incompatible model must not stop the service
            default_problem = f"The model at {default_path} could not be loaded ({error})."
        if default_problem:
            logger.warning("%s Analyses will answer 503 until one is trained.", default_problem)
        for path in _model_folders(settings.models_root):
            if path.resolve() == default_path.resolve() or any(model.name == path.name for model in models):
                continue
            try:
                models.append(LoadedModel(path.name, path, TabularAnomalyDetector.load(path), False))
            except Exception:
                logger.exception("Skipping the model in %s: it could not be loaded", path)
        for model in models:
            logger.info("Loaded model %r (version %s) from %s", model.name, model.version, model.path)
        return cls(models, default_path, default_problem, settings.autoencoder_fallback_train)

    @property
    def default(self) -> LoadedModel | None:
        """The model analyses use when the request names none."""
        return next((model for model in self._models.values() if model.is_default), None)

    @property
    def models(self) -> list[LoadedModel]:
        """Every loaded model, the default first."""
        return sorted(self._models.values(), key=lambda model: (not model.is_default, model.name))

    def runnable_versions(self) -> list[str]:
        """The model versions this process can run analyses for (fallback training counts as one)."""
        versions = [model.version for model in self._models.values()]
        return versions + [FALLBACK_VERSION] if self.fallback_train else versions

    def by_version(self, version: str) -> LoadedModel | None:
        """The loaded model with this version, if any."""
        return next((model for model in self._models.values() if model.version == version), None)

    def resolve(self, name: str | None) -> LoadedModel | None:
        """The model an analysis uses: the named one, else the default; ``None`` means fallback training.

        Raises ``UnknownModelError`` for a name that is not loaded and ``ModelUnavailableError`` when there
        is no default model and fallback training is off.
        """
        if name is not None:
            if name not in self._models:
                available = ", ".join(self._models) or "none"
                raise UnknownModelError(
                    f"No model named {name!r} is loaded (available: {available}). Leave out 'model' to use the "
                    "default, or train one into a sub-folder of MODELS_DIR and restart the service."
                )
            return self._models[name]
        if self.default is not None:
            return self.default
        if self.fallback_train:
            return None
        raise ModelUnavailableError(self.unavailable_message())

    def unavailable_message(self) -> str:
        """The seed's error for a missing model, with what fixes it."""
        return (
            f"No model provided and train_if_needed=False: {self.default_problem} "
            f"Train one from backend/ with `{TRAINING_COMMAND}` (or `--output-dir` pointing at "
            f"AUTOENCODER_MODEL_PATH) and restart the service, or set AUTOENCODER_FALLBACK_TRAIN=true to train "
            f"on each upload (slow)."
        )


def _model_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(
        path
        for path in root.iterdir()
        # Leading dots are the training CLI's half-written staging folders.
        if path.is_dir() and not path.name.startswith(".") and (path / model_store.MODEL_FILENAME).is_file()
    )
