"""What every job a worker runs shares: the database, the settings, the models and the background thread."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from app.core.config import Settings
from app.crud.user_models import ModelVersion
from app.db.collections import Database
from app.jobs.detector_cache import DetectorCache
from app.services import model_files
from app.services.model_registry import DeploymentModel, ModelRegistry
from app.utils.anomaly_detector import TabularAnomalyDetector

T = TypeVar("T")
# How much jobs yield the CPU to the database and to other processes on the host (a nice value: 0 normal,
# 19 lowest): on a shared machine the API's answers come first.
BACKGROUND_NICENESS = 10


def create_job_executor(threads: int) -> ThreadPoolExecutor:
    """The threads that load models, score and train, at a lower CPU priority.

    On Linux the nice value is per thread and inherited by threads created later, so TensorFlow's worker
    threads (created when the first model is loaded here) yield too.
    """
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="job", initializer=_lower_thread_priority)


def _lower_thread_priority() -> None:
    if sys.platform == "linux":
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)


@dataclass(frozen=True)
class WorkerContext:
    """A worker process's shared resources."""

    worker_id: str
    database: Database
    settings: Settings
    registry: ModelRegistry
    detectors: DetectorCache
    executor: ThreadPoolExecutor

    async def in_background(self, function: Callable[..., T], *arguments: Any) -> T:
        """Run blocking work (loading, scoring, training) in the job threads."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *arguments)

    async def deployment_detector(self, model: DeploymentModel) -> TabularAnomalyDetector:
        """The detector of a deployment model, loaded from its folder on first use."""
        return await self.detectors.get(
            model.version, lambda: self.in_background(TabularAnomalyDetector.load, model.path)
        )

    async def user_detector(self, version: ModelVersion) -> TabularAnomalyDetector:
        """The detector of a user's model version, loaded from its files in GridFS on first use."""

        async def load() -> TabularAnomalyDetector:
            with tempfile.TemporaryDirectory(prefix="model-") as folder:
                await model_files.download_version(self.database, version, Path(folder))
                return await self.in_background(TabularAnomalyDetector.load, folder)

        return await self.detectors.get(version.version, load)


@dataclass
class Timings:
    """Seconds a job spent queued and in each of its steps, as its status reports them."""

    seconds: dict[str, float] = field(default_factory=dict)
    _started: float = field(default_factory=time.perf_counter)
    _lap_started: float = field(default_factory=time.perf_counter)

    @classmethod
    def since_queued(cls, queued_seconds: float | None) -> Timings:
        """Timings that start with how long the job waited in the queue."""
        timings = cls()
        if queued_seconds is not None:
            timings.seconds["queued_seconds"] = round(queued_seconds, 3)
        return timings

    def lap(self, step: str) -> None:
        """Record the time since the previous step as ``<step>_seconds``."""
        now = time.perf_counter()
        self.seconds[f"{step}_seconds"] = round(now - self._lap_started, 3)
        self._lap_started = now

    def total(self) -> dict[str, float]:
        """Every step so far, with the total since the job was claimed."""
        return {**self.seconds, "total_seconds": round(time.perf_counter() - self._started, 3)}
