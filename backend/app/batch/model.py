"""The model a batch run scores with: found by name or folder, loaded once per Dask worker process.

``ModelPlugin`` is registered on the cluster for the length of one run: each worker starts loading the
detector as the plugin reaches it and keeps it for every partition it scores, counting its loads so the summary
shows that each worker loaded it once. The worker's ``teardown`` (the run unregistering its plugin, or the
worker closing) lets it go. Workers load from the folder's resolved path, so a symlink switched to another
version mid-run cannot mix two versions in one output (and a folder retrained in place is caught by comparing
the version every partition reports).
"""

from __future__ import annotations

import contextlib
import pickle
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distributed import WorkerPlugin, get_worker

from app.batch.errors import BatchInputError
from app.core.config import Settings
from app.utils import model_store
from app.utils.anomaly_detector import TRAINING_COMMAND, ColumnMismatchError

if TYPE_CHECKING:
    from app.utils.anomaly_detector import TabularAnomalyDetector


@dataclass(frozen=True)
class ModelLocation:
    """A model folder and the name it goes by (its folder's name, as the API serves it)."""

    name: str
    path: str  # absolute, symlinks resolved


def find_model(value: str | None, settings: Settings) -> ModelLocation:
    """The model ``--model`` names: a model under ``MODELS_DIR`` by name, else a folder; none: the default.

    ``BatchInputError`` lists the models there are when ``value`` is neither.
    """
    default = settings.model_path
    if value is None:
        name, folder = default.name, default
    else:
        by_name = default if value == default.name else settings.models_root / value
        if "/" not in value and (by_name / model_store.MODEL_FILENAME).is_file():
            name, folder = value, by_name
        else:
            folder = Path(value).expanduser()
            name = folder.resolve().name if folder.name in ("", ".", "..") else folder.name
    try:
        model_store.model_files(folder)
    except FileNotFoundError as error:
        raise BatchInputError(
            f"No model at {str(folder)!r} ({error}). Give a model folder (autoencoder.h5 + metadata.pkl) or the "
            f"name of one under MODELS_DIR ({settings.models_root}: {', '.join(model_names(settings)) or 'none'}); "
            f"train one from backend/ with `{TRAINING_COMMAND}`."
        ) from error
    return ModelLocation(name, str(folder.resolve()))


def model_names(settings: Settings) -> list[str]:
    """The names ``--model`` accepts: the default model's and those of the model folders under ``MODELS_DIR``."""
    root, default = settings.models_root, settings.model_path
    names = {
        path.name
        for path in (root.iterdir() if root.is_dir() else ())
        # Leading dots are the training CLI's half-written staging folders.
        if not path.name.startswith(".") and (path / model_store.MODEL_FILENAME).is_file()
    }
    if (default / model_store.MODEL_FILENAME).is_file():
        names.add(default.name)
    return sorted(names)


class ModelPlugin(WorkerPlugin):
    """Loads one model folder once per worker process for one run, starting as the plugin reaches the worker."""

    def __init__(self, name: str, model_path: str) -> None:
        self.name = name  # the plugin's name on the cluster: one per run, so concurrent runs never collide
        self.model_path = model_path
        self.loads = 0
        self._detector: TabularAnomalyDetector | None = None
        self._lock: threading.Lock | None = None
        self._closed = False

    def setup(self, worker: Any) -> None:
        """Start loading in the background: TensorFlow's import takes seconds, which then overlap the planning
        tasks instead of delaying the first partition (and never block the worker's event loop)."""
        self._lock = threading.Lock()
        threading.Thread(target=self._preload, name=f"{self.name}-load", daemon=True).start()

    def _preload(self) -> None:
        # Whatever fails here fails again, with its message, in the first task that needs the model.
        with contextlib.suppress(Exception):
            self.detector()

    def teardown(self, worker: Any) -> None:
        """Called when the run ends (or the worker closes): the detector is let go."""
        assert self._lock is not None
        with self._lock:
            self._closed, self._detector = True, None

    def detector(self) -> TabularAnomalyDetector:
        """The worker's detector, loaded on first use; a worker may run several threads, so one loads it."""
        assert self._lock is not None, "setup() runs first, as the plugin reaches the worker"
        with self._lock:
            if self._detector is not None:
                return self._detector
            from app.utils.anomaly_detector import TabularAnomalyDetector

            try:
                detector = TabularAnomalyDetector.load(self.model_path)
            except (OSError, ValueError, pickle.UnpicklingError) as error:
                raise BatchInputError(
                    f"A worker could not load the model at {self.model_path} ({error}): on a cluster, the model "
                    "folder must be at that path on every worker."
                ) from error
            self.loads += 1
            if not self._closed:
                self._detector = detector
            return detector


def worker_model(plugin_name: str) -> ModelPlugin:
    """The run's plugin on the worker running the current task."""
    plugin = get_worker().plugins.get(plugin_name)
    if not isinstance(plugin, ModelPlugin):
        raise RuntimeError(f"The worker has no plugin {plugin_name!r}: the run that registered it has ended.")
    return plugin


def load_model_here(plugin_name: str) -> int:
    """Wait until this worker has the run's model (a Dask task, one per worker); its loads so far."""
    plugin = worker_model(plugin_name)
    plugin.detector()
    return plugin.loads


@dataclass(frozen=True)
class ModelDescription:
    """What the client needs to know of the model, learnt on a worker (the client never loads TensorFlow)."""

    version: str
    threshold: float
    threshold_percentile: float
    feature_names: list[str]
    trained_at: str | None
    column_problems: list[str | None]  # per column list asked about: the detector's mismatch message, or None


def describe_model(
    plugin_name: str, column_lists: list[list[str]], threshold_percentile: float | None
) -> ModelDescription:
    """Load the model on this worker and check each of ``column_lists`` against it (a Dask task)."""
    detector = worker_model(plugin_name).detector()
    problems: list[str | None] = []
    for columns in column_lists:
        try:
            detector.check_columns(columns)
        except ColumnMismatchError as error:
            problems.append(str(error))
        else:
            problems.append(None)
    info = detector.model_info
    if threshold_percentile is None:
        threshold, percentile = detector.threshold, float(info["threshold_percentile"])
    else:
        threshold, percentile = detector.threshold_at(threshold_percentile), threshold_percentile
    return ModelDescription(
        version=str(info["version"]),
        threshold=float(threshold),
        threshold_percentile=percentile,
        feature_names=list(detector.feature_names),
        trained_at=info.get("trained_at"),
        column_problems=problems,
    )
