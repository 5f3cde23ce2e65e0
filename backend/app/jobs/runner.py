"""A job worker: claims queued analyses and trainings from MongoDB and runs them, one of each kind at a time.

Jobs are durable documents, so work survives restarts and is shared by every worker on the database, on any
host. A worker claims one job at a time per kind with an atomic ``find_one_and_update`` that also sets a lease;
while the job runs, a heartbeat records progress and extends the lease. A job whose worker died is claimed
again once its lease runs out (``app.jobs.attempts`` says how each attempt ends).

An idle worker waits on the job-signal collection (a tailable cursor: a queued job starts at once) and, as
a fallback, polls every ``ANALYSIS_POLL_SECONDS``. Every few seconds it says which model versions it serves
(``crud.workers``) and runs the maintenance sweeps (``app.jobs.maintenance``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from pymongo.errors import PyMongoError

from app.core.config import Settings
from app.crud import analyses, job_signals, trainings, workers
from app.db.collections import Database
from app.jobs import maintenance
from app.jobs.analysis_job import AnalysisJob
from app.jobs.attempts import ClaimedJob, run_attempt
from app.jobs.context import Timings, WorkerContext, create_job_executor
from app.jobs.detector_cache import DetectorCache
from app.jobs.training_job import TrainingJob
from app.services.model_registry import ModelRegistry

logger = logging.getLogger(__name__)

# How often a worker says it is alive (and what it serves) and runs the maintenance sweeps.
ANNOUNCE_SECONDS = 5.0
# A worker silent this long is taken for dead.
WORKER_SILENCE_SECONDS = 30.0
# How long to wait before looking at the job signals again after the database failed.
RECONNECT_SECONDS = 2.0


def new_worker_id() -> str:
    """A worker's id: host, process and a random part (a restarted process is a new worker)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class JobWorker:
    """Runs jobs until stopped: one analysis at a time, and one training at a time beside it."""

    def __init__(self, database: Database, settings: Settings, registry: ModelRegistry) -> None:
        self.settings = settings
        self.context = WorkerContext(
            worker_id=new_worker_id(),
            database=database,
            settings=settings,
            registry=registry,
            detectors=DetectorCache(settings.model_cache_size),
            executor=create_job_executor(threads=2),
        )
        self.started_at = datetime.now(UTC)
        self.maintenance = maintenance.Maintenance(settings)
        # Set when a signal says a job of that kind was queued.
        self._waiting = {"analysis": asyncio.Event(), "training": asyncio.Event()}

    @property
    def worker_id(self) -> str:
        """This worker's id, as leases and log lines name it."""
        return self.context.worker_id

    async def run(self) -> None:
        """Work until cancelled; a job in progress is then put back in the queue for another worker."""
        await self._announce()
        tasks = [
            asyncio.create_task(self._announce_forever(), name="announce"),
            asyncio.create_task(self._listen_for_signals(), name="signals"),
            asyncio.create_task(self._run_jobs(self._claim_analysis, self._waiting["analysis"]), name="analyses"),
            asyncio.create_task(self._run_jobs(self._claim_training, self._waiting["training"]), name="trainings"),
            asyncio.create_task(self._warm_up(), name="warm-up"),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(PyMongoError):
                await asyncio.shield(workers.retire(self.context.database, self.worker_id))
            self.context.executor.shutdown(wait=False, cancel_futures=True)

    async def _warm_up(self) -> None:
        """Load the deployment's models now (the default first, as many as the cache keeps), so the first
        analysis is as fast as the rest."""
        for model in self.context.registry.models[: self.context.detectors.capacity]:
            try:
                await self.context.deployment_detector(model)
            except Exception:
                logger.exception("Model %r could not be loaded ahead of its first analysis", model.name)

    async def _announce(self) -> None:
        state = workers.WorkerState(
            worker_id=self.worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            versions=self.context.registry.served_versions(),
            started_at=self.started_at,
        )
        await workers.announce(self.context.database, state, silence_seconds=WORKER_SILENCE_SECONDS)

    async def _announce_forever(self) -> None:
        while True:
            await asyncio.sleep(ANNOUNCE_SECONDS)
            try:
                await self.context.registry.refresh()
                await self._announce()
                await self.maintenance.run_due(self.context.database)
            except PyMongoError as error:
                logger.warning("Could not announce this worker or sweep (%s); retrying", error)
            except Exception:
                logger.exception("Could not announce this worker or sweep; retrying")

    async def _listen_for_signals(self) -> None:
        while True:
            try:
                async for kind in job_signals.tail(self.context.database):
                    if kind in self._waiting:
                        self._waiting[kind].set()
            except PyMongoError as error:
                logger.debug("Job signals interrupted (%s); reopening", error)
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _wait_for_work(self, waiting: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiting.wait(), self.settings.analysis_poll_seconds)
        waiting.clear()

    async def _claim_analysis(self) -> ClaimedJob | None:
        # A model switched on disk is served (and its analyses claimed) without a restart.
        await self.context.registry.refresh()
        analysis = await analyses.claim_next(
            self.context.database,
            worker_id=self.worker_id,
            lease_seconds=self.settings.analysis_lease_seconds,
            deployment_versions=self.context.registry.served_versions(),
            user_models=True,
        )
        return AnalysisJob(self.context, analysis) if analysis is not None else None

    async def _claim_training(self) -> ClaimedJob | None:
        training = await trainings.claim_next(
            self.context.database, worker_id=self.worker_id, lease_seconds=self.settings.analysis_lease_seconds
        )
        return TrainingJob(self.context, training) if training is not None else None

    async def _run_jobs(self, claim: Callable[[], Awaitable[ClaimedJob | None]], waiting: asyncio.Event) -> None:
        """Claim and run jobs of one kind, one at a time, until cancelled."""
        while True:
            job = None
            try:
                job = await claim()
            except PyMongoError as error:
                logger.warning("Could not look for queued jobs (%s); retrying", error)
            except Exception:
                logger.exception("Could not look for queued jobs; retrying")
            if job is not None:
                await run_attempt(job, Timings.since_queued(job.queued_seconds))
                continue
            await self._wait_for_work(waiting)
