"""The deployment's models (folders under ``MODELS_DIR``) as every process sees them, kept current, and the
rule that picks the model an analysis uses.

The default model is ``AUTOENCODER_MODEL_PATH``; every other sub-folder of ``MODELS_DIR`` holding a model is
served too, under its folder's name. Without a default model the service still starts and says why.

The registry holds model *cards* (what ``metadata.pkl`` says: columns, threshold, version), never detectors,
so API processes never import TensorFlow; job workers load the detectors (``app.jobs.detector_cache``).
A model folder that changes on disk (retrained in place, or a symlink switched to another version as in the
seed: ``ln -sfn AutoEncoder_v2 Model/AutoEncoder_active``) is picked up without a restart: ``refresh`` compares
the files' identity and modification time at most every ``MODEL_CHECK_SECONDS`` and reads what changed.
A model's version is a content hash of its files, and every analysis records it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from app.core.config import Settings
from app.core.errors import AmbiguousModelError, ModelUnavailableError, UnknownModelError
from app.core.states import ModelKind
from app.crud.analyses import ModelChoice
from app.utils import model_store
from app.utils.anomaly_detector import TRAINING_COMMAND, ColumnMismatchError
from app.utils.model_card import ModelCard

logger = logging.getLogger(__name__)

# The model_version of analyses that train on their own dataset (AUTOENCODER_FALLBACK_TRAIN=true).
FALLBACK_VERSION = "fallback-training"
FALLBACK_PERCENTILE = 95.0
# How users train a model for their own schema, named in every "no model fits" answer.
TRAIN_THROUGH_API = (
    'train one from a dataset of normal rows with POST /api/anomaly/models {"dataset_id": ..., "name": ...}'
)


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
class DeploymentModel:
    """A model folder served under a name, with its card and the files it was read from."""

    name: str
    path: Path
    card: ModelCard
    is_default: bool
    files: ModelFiles

    @property
    def version(self) -> str:
        """Content hash of the model files: a retrained model is a new version."""
        return self.card.version

    @property
    def choice(self) -> ModelChoice:
        """How an analysis records this model."""
        return ModelChoice(self.name, ModelKind.DEPLOYMENT, self.version)


@dataclass(frozen=True)
class Candidate:
    """A model an analysis may use: a deployment model, or one of the caller's own (its active version)."""

    choice: ModelChoice
    input_columns: list[str]
    threshold_percentile: float
    is_default: bool = False

    def missing_columns(self, columns: Sequence[str]) -> list[str]:
        """The model's input columns the dataset lacks."""
        present = set(columns)
        return [name for name in self.input_columns if name not in present]

    def check_columns(self, columns: Sequence[str]) -> None:
        """Raise ``ColumnMismatchError`` in the detector's words if the dataset lacks columns the model needs."""
        missing = self.missing_columns(columns)
        if missing:
            raise ColumnMismatchError(
                f"Dataset columns don't match model: missing {', '.join(missing)}. "
                f"The model was trained on: {', '.join(self.input_columns)}. "
                f"Upload a file with these columns, or {TRAIN_THROUGH_API}."
            )


@dataclass(frozen=True)
class Selection:
    """The model an analysis uses and the percentile it thresholds at."""

    choice: ModelChoice
    threshold_percentile: float


class ModelRegistry:
    """The deployment's models by name, which one analyses use by default, and how they follow the disk."""

    def __init__(self, settings: Settings) -> None:
        self.default_path = settings.model_path
        self.models_root = settings.models_root
        self.fallback_train = settings.autoencoder_fallback_train
        self.check_seconds = settings.model_check_seconds
        self.default_problem: str | None = None
        self._models: dict[str, DeploymentModel] = {}
        # Files that failed to load, with the reason, by folder: not tried again until they change.
        self._failed: dict[Path, tuple[ModelFiles, str]] = {}
        self._checked_at = -math.inf
        self._lock = asyncio.Lock()

    @classmethod
    def load(cls, settings: Settings) -> ModelRegistry:
        """Read the default model's and every ``MODELS_DIR`` model's card (blocking; no TensorFlow)."""
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
        """Serve what the model folders hold now (blocking: reads the cards whose files changed).

        Unchanged files keep their card. A folder that cannot be read at this moment (gone, or caught half-way
        through a switch) keeps serving what was read from it, and so does one whose new files fail to read.
        Two names leading to the same folder (``AutoEncoder_active`` and its target) are served once, under the
        first: the default, then the others by name.
        """
        previous = self._models
        cards = {model.files: model.card for model in previous.values()}
        models: dict[str, DeploymentModel] = {}
        default_problem: str | None = None
        for name, folder, is_default in self._folders():
            model: DeploymentModel | None = previous.get(name)
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
                        card = cards.get(files) or ModelCard.load(folder)
                    except Exception as error:  # a damaged or incompatible model must not stop the service
                        logger.exception("The model in %s could not be read", folder)
                        failure = f"The model at {folder} could not be loaded ({error})."
                        self._failed[folder] = (files, failure)
                    else:
                        cards[files] = card
                        model = DeploymentModel(name, folder, card, is_default, files)
                        logger.info("Serving model %r, version %s, from %s", name, model.version, files.target)
                if is_default and model is None:
                    default_problem = failure
            if model is not None:
                models[name] = model
        if default_problem and default_problem != self.default_problem:
            logger.warning("%s Analyses will answer 503 until one is trained.", default_problem)
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
    def default(self) -> DeploymentModel | None:
        """The model analyses use when the request names none and it fits the dataset."""
        return next((model for model in self._models.values() if model.is_default), None)

    @property
    def models(self) -> list[DeploymentModel]:
        """Every deployment model, the default first."""
        return sorted(self._models.values(), key=lambda model: (not model.is_default, model.name))

    def names(self) -> set[str]:
        """The deployment's model names, folders on disk included: reserved, no user model may take one."""
        names = {self.default_path.name, *self._models}
        if self.models_root.is_dir():
            names |= {path.name for path in self.models_root.iterdir() if not path.name.startswith(".")}
        return names

    def served_versions(self) -> list[str]:
        """The deployment model versions a worker with these folders can run (fallback training counts as one)."""
        versions = [model.version for model in self._models.values()]
        return versions + [FALLBACK_VERSION] if self.fallback_train else versions

    def by_version(self, version: str) -> DeploymentModel | None:
        """The deployment model with this version, if it is served."""
        return next((model for model in self._models.values() if model.version == version), None)

    def candidates(self) -> list[Candidate]:
        """The deployment models as analysis candidates, the default first."""
        return [
            Candidate(model.choice, model.card.feature_names, model.card.threshold_percentile, model.is_default)
            for model in self.models
        ]

    def select(
        self,
        name: str | None,
        columns: list[str],
        *,
        user_models: Sequence[Candidate],
        threshold_percentile: float | None,
    ) -> Selection:
        """The model an analysis of a dataset with ``columns`` uses, among the deployment's and the caller's own.

        A named model must exist (``UnknownModelError``) and fit the columns (``ColumnMismatchError``). Without a
        name: the default model if it fits, else the only model that fits; several that fit raise
        ``AmbiguousModelError``, none ``ColumnMismatchError`` naming each model's missing columns. With no model
        at all: fallback training, or ``ModelUnavailableError`` when it is off.
        """
        candidates = [*self.candidates(), *user_models]
        if name is not None:
            # The caller's own model first: its name was free when trained, a deployment model may come later.
            named = next(
                (candidate for candidate in [*user_models, *candidates] if candidate.choice.name == name), None
            )
            if named is None:
                raise UnknownModelError(
                    f"No model named {name!r} (available: "
                    f"{', '.join(candidate.choice.name or '' for candidate in candidates) or 'none'}). Leave out "
                    f"'model' to pick the one that fits the dataset's columns, or {TRAIN_THROUGH_API}."
                )
            named.check_columns(columns)
            return _selection(named, threshold_percentile)
        if not candidates:
            if self.fallback_train:
                return self._fallback(threshold_percentile)
            raise ModelUnavailableError(self.unavailable_message())
        fitting = [candidate for candidate in candidates if not candidate.missing_columns(columns)]
        if (fitting and fitting[0].is_default) or len(fitting) == 1:
            return _selection(fitting[0], threshold_percentile)
        if fitting:
            raise AmbiguousModelError(
                f"Several models fit the dataset's columns: "
                f'{", ".join(candidate.choice.name or "" for candidate in fitting)}. Name one with "model" in the '
                "analyze body (GET /api/anomaly/models describes them)."
            )
        if self.default is None and self.fallback_train:
            return self._fallback(threshold_percentile)
        if len(candidates) == 1:
            candidates[0].check_columns(columns)  # raises, in the detector's own words
        missing = "; ".join(
            f"{candidate.choice.name} is missing {', '.join(candidate.missing_columns(columns))}"
            for candidate in candidates
        )
        raise ColumnMismatchError(
            f"Dataset columns don't match model: no model has every column it needs ({missing}). Upload a file "
            f"with one model's columns, or {TRAIN_THROUGH_API}."
        )

    def _fallback(self, threshold_percentile: float | None) -> Selection:
        percentile = FALLBACK_PERCENTILE if threshold_percentile is None else threshold_percentile
        return Selection(ModelChoice(None, ModelKind.FALLBACK, FALLBACK_VERSION), percentile)

    def unavailable_message(self) -> str:
        """The seed's error for a missing model, with what fixes it."""
        return (
            f"No model provided and train_if_needed=False: {self.default_problem} "
            f"Train one from backend/ with `{TRAINING_COMMAND}` (or `--output-dir` pointing at "
            f"AUTOENCODER_MODEL_PATH); it is picked up without a restart. Or set AUTOENCODER_FALLBACK_TRAIN=true "
            f"to train on each upload (slow)."
        )


def _selection(candidate: Candidate, threshold_percentile: float | None) -> Selection:
    percentile = candidate.threshold_percentile if threshold_percentile is None else threshold_percentile
    return Selection(candidate.choice, float(percentile))
