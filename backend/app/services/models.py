"""The trained models this process serves: loaded at startup, shared by every request and job, kept current.

The default model is ``AUTOENCODER_MODEL_PATH``; every other sub-folder of ``MODELS_DIR`` holding a model is
served too, under its folder's name. Without a default model the service still starts and says why.

A model folder that changes on disk (retrained in place, or a symlink switched to another version as in the
seed: ``ln -sfn AutoEncoder_v2 Model/AutoEncoder_active``) is picked up without a restart: ``refresh`` compares
the files' identity and modification time at most every ``MODEL_CHECK_SECONDS`` and loads what changed in a
thread. A model's version is a content hash of its files, and every analysis session records it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.config import Settings
from app.core.errors import AmbiguousModelError, ModelUnavailableError, UnknownModelError
from app.utils import model_store
from app.utils.anomaly_detector import TRAINING_COMMAND, ColumnMismatchError, TabularAnomalyDetector

logger = logging.getLogger(__name__)

# The model_version of sessions that train on their own dataset (AUTOENCODER_FALLBACK_TRAIN=true).
FALLBACK_VERSION = "fallback-training"


@dataclass(frozen=True)
class ModelFiles:
    """Where a model folder leads and the identity of its two files: any change is a new model on disk."""

    target: Path
    identity: tuple[tuple[int, int, int, int], ...]

    @classmethod
    def of(cls, folder: Path) -> ModelFiles:
        """Look at ``folder`` now (a few ``stat`` calls); ``FileNotFoundError`` names a missing model file."""
        target = folder.resolve()
        stats = [path.stat() for path in model_store.model_files(target)]
        return cls(target, tuple((stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size) for stat in stats))


@dataclass(frozen=True)
class LoadedModel:
    """A detector with the name it is served under and the files it was loaded from."""

    name: str
    path: Path
    detector: TabularAnomalyDetector
    is_default: bool
    files: ModelFiles

    @property
    def version(self) -> str:
        """Content hash of the model files: a retrained model is a new version."""
        return str(self.detector.model_info["version"])

    @property
    def info(self) -> dict[str, Any]:
        """Name-independent facts about the model (features, threshold, training date, version...)."""
        return self.detector.model_info


class ModelRegistry:
    """The loaded models, by name, which one analyses use by default, and how they follow the disk."""

    def __init__(self, settings: Settings) -> None:
        self.default_path = settings.model_path
        self.models_root = settings.models_root
        self.fallback_train = settings.autoencoder_fallback_train
        self.check_seconds = settings.model_check_seconds
        self.default_problem: str | None = None
        self._models: dict[str, LoadedModel] = {}
        # Versions that were served and have been replaced on disk: their queued sessions fail with a reason.
        self._retired_versions: set[str] = set()
        # Files that failed to load, with the reason, by folder: not tried again until they change.
        self._failed: dict[Path, tuple[ModelFiles, str]] = {}
        self._checked_at = -math.inf
        self._lock = asyncio.Lock()

    @classmethod
    def load(cls, settings: Settings) -> ModelRegistry:
        """Load the default model and every model under ``MODELS_DIR`` (blocking: TensorFlow loads here)."""
        registry = cls(settings)
        registry.update()
        return registry

    async def refresh(self) -> None:
        """Pick up model folders that changed on disk; a no-op if the last look was under ``check_seconds`` ago."""
        if time.monotonic() - self._checked_at < self.check_seconds:
            return
        async with self._lock:
            if time.monotonic() - self._checked_at < self.check_seconds:
                return
            try:
                await asyncio.to_thread(self.update)
            finally:
                self._checked_at = time.monotonic()

    def update(self) -> None:
        """Serve what the model folders hold now (blocking: loads the models whose files changed).

        Unchanged files keep their loaded detector. A folder that cannot be read at this moment (gone, or caught
        half-way through a switch) keeps serving what was loaded from it, and so does one whose new files fail
        to load. Two names leading to the same folder (``AutoEncoder_active`` and its target) are served once,
        under the first: the default, then the others by name.
        """
        previous = self._models
        detectors = {model.files: model.detector for model in previous.values()}
        models: dict[str, LoadedModel] = {}
        default_problem: str | None = None
        for name, folder, is_default in self._folders():
            model: LoadedModel | None = previous.get(name)
            try:
                files: ModelFiles | None = ModelFiles.of(folder)
            except OSError as error:
                if is_default and model is None:
                    default_problem = f"No model at {folder} ({error})."
                files = None
            if files is not None and any(other.files.target == files.target for other in models.values()):
                continue  # served under an earlier name
            if files is not None and (model is None or model.files != files):
                failed_files, failure = self._failed.get(folder, (None, ""))
                if failed_files != files:
                    try:
                        detector = detectors.get(files) or TabularAnomalyDetector.load(folder)
                    except Exception as error:  # a damaged or incompatible model must not stop the service
                        logger.exception("The model in %s could not be loaded", folder)
                        failure = f"The model at {folder} could not be loaded ({error})."
                        self._failed[folder] = (files, failure)
                    else:
                        detectors[files] = detector
                        model = LoadedModel(name, folder, detector, is_default, files)
                        logger.info("Serving model %r, version %s, from %s", name, model.version, files.target)
                if is_default and model is None:
                    default_problem = failure
            if model is not None:
                models[name] = model
        if default_problem and default_problem != self.default_problem:
            logger.warning("%s Analyses will answer 503 until one is trained.", default_problem)
        served = {model.version for model in models.values()}
        self._retired_versions |= {model.version for model in previous.values()} - served
        self._retired_versions -= served
        self._models = models
        self.default_problem = default_problem

    def _folders(self) -> list[tuple[str, Path, bool]]:
        """The model folders to serve, as (name, folder, is_default): the default first."""
        folders = [(self.default_path.name, self.default_path, True)]
        if self.models_root.is_dir():
            folders += [
                (path.name, path, False)
                for path in sorted(self.models_root.iterdir())
                # Leading dots are the training CLI's half-written staging folders.
                if path.name != self.default_path.name and not path.name.startswith(".")
                # A served folder stays listed while it is unreadable (mid-switch); see update().
                and (path.name in self._models or (path / model_store.MODEL_FILENAME).is_file())
            ]  # fmt: skip
        return folders

    @property
    def default(self) -> LoadedModel | None:
        """The model analyses use when the request names none and it fits the dataset."""
        return next((model for model in self._models.values() if model.is_default), None)

    @property
    def models(self) -> list[LoadedModel]:
        """Every loaded model, the default first."""
        return sorted(self._models.values(), key=lambda model: (not model.is_default, model.name))

    def runnable_versions(self) -> list[str]:
        """The model versions this process can run analyses for (fallback training counts as one)."""
        versions = [model.version for model in self._models.values()]
        return versions + [FALLBACK_VERSION] if self.fallback_train else versions

    def claimable_versions(self) -> list[str]:
        """The runnable versions and the retired ones, whose queued sessions the runner fails with the reason."""
        return self.runnable_versions() + sorted(self._retired_versions)

    def by_version(self, version: str) -> LoadedModel | None:
        """The loaded model with this version, if any."""
        return next((model for model in self._models.values() if model.version == version), None)

    def select(self, name: str | None, columns: list[str]) -> LoadedModel | None:
        """The model an analysis of a dataset with ``columns`` uses; ``None`` means fallback training.

        A named model must be loaded (``UnknownModelError``) and fit the columns (``ColumnMismatchError``).
        Without a name: the default model if it fits, else the only model that fits; several that fit raise
        ``AmbiguousModelError``, none ``ColumnMismatchError`` naming each model's missing columns. With no model
        loaded at all, fallback training, or ``ModelUnavailableError`` when it is off.
        """
        if name is not None:
            model = self._models.get(name)
            if model is None:
                raise UnknownModelError(
                    f"No model named {name!r} is loaded (available: {', '.join(self._models) or 'none'}). Leave "
                    "out 'model' to pick the one that fits the dataset's columns, or train one into a sub-folder "
                    "of MODELS_DIR (it is picked up without a restart)."
                )
            model.detector.check_columns(columns)
            return model
        if not self._models:
            if self.fallback_train:
                return None
            raise ModelUnavailableError(self.unavailable_message())
        candidates = self.models
        fitting = [model for model in candidates if not model.detector.missing_columns(columns)]
        if (fitting and fitting[0].is_default) or len(fitting) == 1:
            return fitting[0]
        if fitting:
            raise AmbiguousModelError(
                f"Several models fit the dataset's columns: {', '.join(model.name for model in fitting)}. Name "
                'one with "model" in the analyze body (GET /api/anomaly/models describes them).'
            )
        if self.default is None and self.fallback_train:
            return None
        if len(candidates) == 1:
            candidates[0].detector.check_columns(columns)  # raises, in the detector's own words
        missing = "; ".join(
            f"{model.name} is missing {', '.join(model.detector.missing_columns(columns))}" for model in candidates
        )
        raise ColumnMismatchError(
            f"Dataset columns don't match model: no loaded model has every column it needs ({missing}). Upload a "
            "file with one model's columns, or train a model for this schema into a sub-folder of MODELS_DIR."
        )

    def unavailable_message(self) -> str:
        """The seed's error for a missing model, with what fixes it."""
        return (
            f"No model provided and train_if_needed=False: {self.default_problem} "
            f"Train one from backend/ with `{TRAINING_COMMAND}` (or `--output-dir` pointing at "
            f"AUTOENCODER_MODEL_PATH); it is picked up without a restart. Or set AUTOENCODER_FALLBACK_TRAIN=true "
            f"to train on each upload (slow)."
        )
