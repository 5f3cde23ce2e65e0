"""A job worker: claims queued analyses (and trainings) from MongoDB, runs them, and reports each attempt.

Jobs are durable documents, so work survives restarts and is shared by every worker on the database, on any
host. A worker claims one job at a time per kind with an atomic ``find_one_and_update`` that also sets a lease;
while the job runs, a heartbeat records progress and extends the lease. A job whose worker died is claimed
again once its lease runs out; one interrupted ``MAX_ATTEMPTS`` times is failed with the reason.

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
from datetime import UTC, datetime
from typing import Any

from pymongo.errors import ConnectionFailure, PyMongoError

from app.core import metrics
from app.core.config import Settings
from app.core.structured_log import ANALYSIS_LOGGER, log_event
from app.crud import analyses, datasets, job_signals, workers
from app.crud.analyses import Analysis
from app.db.collections import Database
from app.jobs import maintenance
from app.jobs.analysis_job import AnalysisJob, DatasetGoneError, ModelNotServedError
from app.jobs.context import Timings, WorkerContext, create_job_executor
from app.jobs.detector_cache import DetectorCache
from app.jobs.lease import LeaseLostError, Progress, kept
from app.services import analysis_results
from app.services.model_registry import ModelRegistry

logger = logging.getLogger(__name__)
analysis_log = logging.getLogger(ANALYSIS_LOGGER)

# A job interrupted this many times (its worker died each time) is failed rather than retried forever.
MAX_ATTEMPTS = 3
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
        self._analysis_waiting = asyncio.Event()

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
            asyncio.create_task(self._run_analyses(), name="analyses"),
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
                    if kind == "analysis":
                        self._analysis_waiting.set()
            except PyMongoError as error:
                logger.debug("Job signals interrupted (%s); reopening", error)
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _wait_for_work(self, waiting: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiting.wait(), self.settings.analysis_poll_seconds)
        waiting.clear()

    async def _run_analyses(self) -> None:
        while True:
            analysis = None
            try:
                # A model switched on disk is served (and its analyses claimed) without a restart.
                await self.context.registry.refresh()
                analysis = await analyses.claim_next(
                    self.context.database,
                    worker_id=self.worker_id,
                    lease_seconds=self.settings.analysis_lease_seconds,
                    deployment_versions=self.context.registry.served_versions(),
                    user_models=True,
                )
            except PyMongoError as error:
                logger.warning("Could not look for queued analyses (%s); retrying", error)
            except Exception:
                logger.exception("Could not look for queued analyses; retrying")
            if analysis is not None:
                await self._run_analysis(analysis)
                continue
            await self._wait_for_work(self._analysis_waiting)

    async def _run_analysis(self, analysis: Analysis) -> None:
        database = self.context.database
        attempt = analysis.attempts
        queued = (analysis.started_at - analysis.created_at).total_seconds() if analysis.started_at else None
        timings = Timings.since_queued(queued)
        progress = Progress()

        async def renew(current: Progress) -> bool:
            return await analyses.heartbeat(
                database,
                analysis.id,
                worker_id=self.worker_id,
                attempt=attempt,
                progress=current.percent,
                lease_seconds=self.settings.analysis_lease_seconds,
            )

        try:
            if attempt > MAX_ATTEMPTS:
                raise RuntimeError(
                    f"The analysis was interrupted {MAX_ATTEMPTS} times (its worker stopped, or the database was "
                    "unreachable, each time); the file may be too large for the worker's memory. Try a smaller "
                    "file, or analyze again once the service is healthy."
                )
            job = AnalysisJob(self.context, analysis)
            async with kept(renew, self.settings.analysis_lease_seconds, progress):
                record = await job.run(progress, timings)
        except asyncio.CancelledError:
            await asyncio.shield(analyses.release(database, analysis.id, worker_id=self.worker_id, attempt=attempt))
            logger.info("Analysis %s put back in the queue: this worker is stopping", analysis.id)
            raise
        except LeaseLostError:
            logger.warning(
                "Analysis %s was taken over or deleted while %s ran it: discarded", analysis.id, self.worker_id
            )
            self._report(analysis, "discarded", timings)
        except DatasetGoneError:
            await self._discard_deleted(analysis)
            self._report(analysis, "discarded", timings)
        except ModelNotServedError:
            # Its model folder changed since the claim: another worker (or this one, refreshed) takes it up.
            await analyses.release(database, analysis.id, worker_id=self.worker_id, attempt=attempt)
            self._report(analysis, "released", timings)
        except ConnectionFailure as error:
            # The database went away mid-analysis: nothing is wrong with the data, so try again. If the analysis
            # cannot even be put back now, its lease runs out and it is claimed once the database is back.
            logger.warning(
                "Analysis %s interrupted, to be retried: the database is unreachable (%s)", analysis.id, error
            )
            metrics.ANALYSIS_FAILURES.labels("database").inc()
            self._report(analysis, "retried", timings, error=f"database unreachable ({type(error).__name__})")
            with contextlib.suppress(PyMongoError):
                await analyses.requeue(database, analysis.id, worker_id=self.worker_id, attempt=attempt)
        except Exception as error:
            await self._fail(analysis, error, timings)
        else:
            metrics.ANALYSIS_ROWS_SCORED.inc(record.row_count)
            self._report(analysis, "analyzed", timings, rows=record.row_count, anomaly_count=record.anomaly_count)
            await job.tidy_up()

    async def _fail(self, analysis: Analysis, error: Exception, timings: Timings) -> None:
        database = self.context.database
        with contextlib.suppress(PyMongoError):
            if await datasets.find(database, analysis.dataset_id) is None:
                # The dataset was deleted while its analysis ran (its files went first): nothing to report.
                await self._discard_deleted(analysis)
                self._report(analysis, "discarded", timings)
                return
        logger.error("Analysis %s failed", analysis.id, exc_info=error)
        metrics.ANALYSIS_FAILURES.labels("error").inc()
        message = user_message(error)
        self._report(analysis, "failed", timings, error=message)
        with contextlib.suppress(PyMongoError):
            await analyses.fail(
                database,
                analysis.id,
                worker_id=self.worker_id,
                attempt=analysis.attempts,
                error=message,
                timings=timings.total(),
            )
            await analysis_results.delete(database, [analysis])  # what interrupted earlier attempts left behind

    async def _discard_deleted(self, analysis: Analysis) -> None:
        """The analysis's dataset is gone: remove what a delete racing this analysis may have missed."""
        database = self.context.database
        removed = await analyses.delete_for_dataset(database, analysis.dataset_id)
        await analysis_results.delete(database, [analysis, *removed])
        logger.info("Analysis %s dropped: its dataset %s was deleted", analysis.id, analysis.dataset_id)

    def _report(self, analysis: Analysis, outcome: str, timings: Timings, **fields: Any) -> None:
        """One structured log line per analysis attempt, and its duration in the metrics."""
        spent = timings.total()
        metrics.ANALYSIS_SECONDS.labels(outcome).observe(spent["total_seconds"])
        log_event(
            analysis_log,
            "analysis",
            outcome=outcome,
            session_id=analysis.id,
            dataset_id=analysis.dataset_id,
            owner_id=analysis.owner_id,
            worker=self.worker_id,
            attempt=analysis.attempts,
            model=analysis.model.name,
            model_version=analysis.model.version,
            **fields,
            timings=spent,
        )


def user_message(error: Exception) -> str:
    """What a failed job tells its user: the error's own words when they are written for users."""
    if isinstance(error, ValueError | RuntimeError):
        return str(error)
    return f"Internal error while analysing ({type(error).__name__}): see the worker's log, then analyze again."
