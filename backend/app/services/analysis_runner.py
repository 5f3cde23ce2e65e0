"""The background side of analyses: a runner in every API process claims queued sessions and runs them.

Sessions are durable documents, so work survives restarts and is shared by every process on the database
(``--workers 2``, or several hosts). A runner claims one session at a time with an atomic
``find_one_and_update`` that also sets a lease; while the job runs, a heartbeat records progress and
extends the lease. A session whose process died is claimed again once its lease runs out, and a worker
that lost its lease discards its results instead of overwriting the new owner's.

Parsing and scoring run in a thread, so the event loop keeps answering status requests during a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from pymongo.errors import ConnectionFailure, PyMongoError

from app.core import metrics
from app.core.config import Settings
from app.core.structured_log import ANALYSIS_LOGGER, log_event
from app.crud import anomaly_pages, datasets, files, sessions
from app.crud.sessions import AnalysisSession
from app.db.collections import RESULTS_BUCKET, Database
from app.services import datasets as dataset_service
from app.services.models import ModelRegistry
from app.services.table_snapshot import TableSnapshot, json_value
from app.utils.anomaly_detector import TabularAnomalyDetector

logger = logging.getLogger(__name__)
analysis_log = logging.getLogger(ANALYSIS_LOGGER)

# Scores are stored as little-endian float64, one per row: exact, so is_anomaly never flips on export.
SCORES_DTYPE = "<f8"
# Each row's top contributing column, as an index into the session's feature_names (-1: none), one per row.
TOP_COLUMNS_DTYPE = "<i4"
# A session interrupted this many times (its process died each time) is failed rather than retried forever.
MAX_ATTEMPTS = 3
# Rows scored between progress updates.
SCORING_CHUNK_ROWS = 20_000
# The columns named in an anomaly's top_features.
TOP_FEATURES = 3
# Progress writes are at most this frequent: each one competes with users' status reads.
HEARTBEAT_SECONDS = 0.5
STOP_TIMEOUT_SECONDS = 5.0
# How much analyses yield the CPU to requests (a nice value: 0 normal, 19 lowest).
BACKGROUND_NICENESS = 10
T = TypeVar("T")


def create_background_executor() -> ThreadPoolExecutor:
    """The thread that loads models and runs analyses, at a lower CPU priority than request handling.

    Scoring keeps every core busy; at normal priority it would make users' status requests wait behind it.
    On Linux the nice value is per thread and inherited by threads created later, so TensorFlow's worker
    threads (created when the first model is loaded here) yield to the event loop and the database too.
    """
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="analysis", initializer=_lower_thread_priority)


def _lower_thread_priority() -> None:
    if sys.platform == "linux":
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)


class _LeaseLostError(Exception):
    """Another worker took the session over (or it was deleted): stop and discard this attempt."""


class _Timings:
    """Seconds a session spent queued and in each step of its analysis, as status reports them."""

    def __init__(self, session: AnalysisSession) -> None:
        self.seconds: dict[str, float] = {}
        if session.started_at is not None:
            self.seconds["queued_seconds"] = round((session.started_at - session.created_at).total_seconds(), 3)
        self._started = self._lap_started = time.perf_counter()

    def lap(self, step: str) -> None:
        """Record the time since the previous step as ``<step>_seconds``."""
        now = time.perf_counter()
        self.seconds[f"{step}_seconds"] = round(now - self._lap_started, 3)
        self._lap_started = now

    def total(self) -> dict[str, float]:
        """Every step so far, with the total since the session was claimed."""
        return {**self.seconds, "total_seconds": round(time.perf_counter() - self._started, 3)}


class _Progress:
    """Progress shared between a job's thread (which sets it) and its heartbeat (which records it)."""

    def __init__(self) -> None:
        self.percent = 1
        self.lease_lost = False

    def set(self, percent: float) -> None:
        """Move progress forward (never back, never to 100 before the results are stored)."""
        if self.lease_lost:
            raise _LeaseLostError
        self.percent = int(min(max(percent, self.percent), 99))


@dataclass(frozen=True)
class ScoredTable:
    """One analysis's output, ready to store: every row's score and top column, and the anomalies, ranked."""

    scores: np.ndarray
    top_columns: np.ndarray  # per row: index into feature_names of the column contributing most; -1 for none
    feature_names: list[str]
    anomalies: list[dict[str, Any]]


class AnalysisRunner:
    """Runs this process's share of queued analysis sessions, one at a time."""

    def __init__(
        self, database: Database, models: ModelRegistry, settings: Settings, executor: ThreadPoolExecutor
    ) -> None:
        self.database = database
        self.executor = executor
        self.models = models
        self.lease_seconds = settings.analysis_lease_seconds
        self.poll_seconds = settings.analysis_poll_seconds
        self.fallback_epochs = settings.autoencoder_fallback_epochs
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start claiming work (while this process can run no model, it claims nothing)."""
        self._task = asyncio.create_task(self._run_forever(), name="analysis-runner")

    async def stop(self) -> None:
        """Stop; a job in progress is put back in the queue for another process."""
        if self._task is not None:
            self._task.cancel()
            # A database call cut off mid-way (the server went down) can hold the cancellation back until its
            # own timeout: shutdown does not wait for that.
            await asyncio.wait({self._task}, timeout=STOP_TIMEOUT_SECONDS)
            self._task = None

    async def _in_background(self, function: Callable[..., T], *arguments: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *arguments)

    def wake(self) -> None:
        """Look for work now (this process just queued a session) rather than at the next poll."""
        self._wake.set()

    async def _run_forever(self) -> None:
        while True:
            self._wake.clear()
            session = None
            try:
                # A model switched on disk is served (and its sessions claimed) without a restart.
                await self.models.refresh()
                versions = self.models.claimable_versions()
                if versions:
                    session = await sessions.claim_next(self.database, self.worker_id, self.lease_seconds, versions)
            except PyMongoError as error:
                logger.warning("Could not look for queued analyses (%s); retrying", error)
            except Exception:
                logger.exception("Could not look for queued analyses; retrying")
            if session is not None:
                await self._run(session)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)

    async def _run(self, session: AnalysisSession) -> None:
        progress = _Progress()
        heartbeat = asyncio.create_task(self._keep_lease(session, progress))
        timings = _Timings(session)
        try:
            if session.attempts > MAX_ATTEMPTS:
                raise RuntimeError(
                    f"The analysis was interrupted {MAX_ATTEMPTS} times (its server process stopped, or the database "
                    "was unreachable, each time); the file may be too large for the server's memory. Try a smaller "
                    "file, or analyze again once the service is healthy."
                )
            await self._analyse(session, progress, timings)
        except asyncio.CancelledError:
            await asyncio.shield(sessions.release(self.database, session.id, self.worker_id))
            logger.info("Session %s put back in the queue: this process is stopping", session.id)
            raise
        except _LeaseLostError:
            logger.warning(
                "Session %s was taken over or deleted while %s ran it: result discarded", session.id, self.worker_id
            )
            self._report(session, "discarded", timings)
        except ConnectionFailure as error:
            # The database went away mid-analysis: nothing is wrong with the data, so try again. If the
            # session cannot even be put back now, its lease runs out and it is claimed once the database is back.
            logger.warning("Session %s interrupted, to be retried: the database is unreachable (%s)", session.id, error)
            metrics.ANALYSIS_FAILURES.labels("database").inc()
            self._report(session, "retried", timings, error=f"database unreachable ({type(error).__name__})")
            with contextlib.suppress(PyMongoError):
                await sessions.requeue(self.database, session.id, self.worker_id)
        except Exception as error:
            with contextlib.suppress(PyMongoError):
                if await datasets.find(self.database, session.dataset_id) is None:
                    # The dataset was deleted while its analysis ran (its files went first): nothing to report.
                    await self._discard_deleted(session)
                    self._report(session, "discarded", timings)
                    return
            logger.exception("Session %s failed", session.id)
            metrics.ANALYSIS_FAILURES.labels("error").inc()
            self._report(session, "failed", timings, error=_user_message(error))
            with contextlib.suppress(PyMongoError):
                await sessions.fail(self.database, session.id, self.worker_id, _user_message(error), timings.total())
        finally:
            heartbeat.cancel()

    def _report(self, session: AnalysisSession, outcome: str, timings: _Timings, **fields: Any) -> None:
        """One structured log line per analysis attempt, and its duration in the metrics."""
        spent = timings.total()
        metrics.ANALYSIS_SECONDS.labels(outcome).observe(spent["total_seconds"])
        log_event(
            analysis_log,
            "analysis",
            outcome=outcome,
            session_id=session.id,
            dataset_id=session.dataset_id,
            owner_id=session.owner_id,
            worker=self.worker_id,
            attempt=session.attempts,
            model=session.model,
            model_version=session.model_version,
            **fields,
            timings=spent,
        )

    async def _analyse(self, session: AnalysisSession, progress: _Progress, timings: _Timings) -> None:
        dataset = await datasets.find(self.database, session.dataset_id)
        if dataset is None:
            await self._discard_deleted(session)
            self._report(session, "discarded", timings)
            return
        table = await dataset_service.load_snapshot(self.database, dataset)
        timings.lap("load")
        progress.set(10)

        if session.fallback_train:
            detector = await self._in_background(
                _train_on_dataset, table.rows(), session.threshold_percentile, self.fallback_epochs
            )
            threshold = detector.threshold
            timings.lap("train")
            progress.set(50)
        else:
            model = self.models.by_version(session.model_version)
            if model is None:
                raise RuntimeError(
                    f"Model {session.model!r} version {session.model_version} was replaced on disk before the "
                    "analysis started: analyze again to use the new version."
                )
            detector = model.detector
            threshold = (
                detector.threshold
                if session.threshold_percentile == detector.threshold_percentile
                else detector.threshold_at(session.threshold_percentile)
            )
        scored = await self._in_background(score_table, detector, table, threshold, progress)
        timings.lap("score")
        progress.set(95)
        await self._store(session, scored, threshold, timings)

    async def _discard_deleted(self, session: AnalysisSession) -> None:
        """The session's dataset is gone: remove what a delete racing this analysis may have missed."""
        removed = await sessions.delete_for_dataset(self.database, session.dataset_id)
        session_ids = {session.id, *(other.id for other in removed)}
        await anomaly_pages.delete_for_sessions(self.database, session_ids)
        await files.delete(self.database, RESULTS_BUCKET, [file_id for other in removed for file_id in other.file_ids])
        logger.info("Session %s dropped: its dataset %s was deleted", session.id, session.dataset_id)

    async def _store(self, session: AnalysisSession, scored: ScoredTable, threshold: float, timings: _Timings) -> None:
        metadata = {"session_id": session.id}
        scores = scored.scores.astype(SCORES_DTYPE).tobytes()
        top_columns = scored.top_columns.astype(TOP_COLUMNS_DTYPE).tobytes()
        scores_file_id = await files.store(self.database, RESULTS_BUCKET, f"{session.id}.scores", scores, metadata)
        top_columns_file_id: str | None = None
        try:
            top_columns_file_id = await files.store(
                self.database, RESULTS_BUCKET, f"{session.id}.top_columns", top_columns, metadata
            )
            # Pages an interrupted earlier attempt left behind would collide with this attempt's.
            await anomaly_pages.delete_for_sessions(self.database, [session.id])
            await anomaly_pages.insert(self.database, session.id, scored.anomalies)
            timings.lap("store")
            completed = await sessions.complete(
                self.database,
                session.id,
                self.worker_id,
                row_count=len(scored.scores),
                anomaly_count=len(scored.anomalies),
                threshold=threshold,
                timings=timings.total(),
                scores_file_id=scores_file_id,
                top_columns_file_id=top_columns_file_id,
                feature_names=scored.feature_names,
            )
        except BaseException:
            await asyncio.shield(files.delete(self.database, RESULTS_BUCKET, [scores_file_id, top_columns_file_id]))
            raise
        if not completed:
            await files.delete(self.database, RESULTS_BUCKET, [scores_file_id, top_columns_file_id])
            if await sessions.find(self.database, session.id) is None:
                await anomaly_pages.delete_for_sessions(self.database, [session.id])
            raise _LeaseLostError
        metrics.ANALYSIS_ROWS_SCORED.inc(len(scored.scores))
        self._report(session, "analyzed", timings, rows=len(scored.scores), anomaly_count=len(scored.anomalies))

    async def _keep_lease(self, session: AnalysisSession, progress: _Progress) -> None:
        recorded, renewed = progress.percent, time.monotonic()
        interval = min(HEARTBEAT_SECONDS, self.lease_seconds / 4)
        while True:
            await asyncio.sleep(interval)
            if progress.percent == recorded and time.monotonic() - renewed < self.lease_seconds / 3:
                continue
            try:
                owned = await sessions.heartbeat(
                    self.database, session.id, self.worker_id, progress.percent, self.lease_seconds
                )
            except PyMongoError as error:
                logger.warning("Heartbeat of session %s failed (%s); retrying", session.id, error)
                continue
            if not owned:
                progress.lease_lost = True
                return
            recorded, renewed = progress.percent, time.monotonic()


def score_table(
    detector: TabularAnomalyDetector, table: TableSnapshot, threshold: float, progress: _Progress
) -> ScoredTable:
    """Score every row; rank the rows above ``threshold`` with their values and the columns that explain them.

    The table is decoded ``SCORING_CHUNK_ROWS`` rows at a time, so memory grows with the anomalies, not the rows.
    """
    start_percent = progress.percent
    scores = np.empty(table.row_count, dtype=np.float64)
    top_columns = np.empty(table.row_count, dtype=np.int32)
    anomalous: list[int] = []
    row_values: list[np.ndarray] = []
    explanations: list[list[dict[str, Any]]] = []
    for chunk in table.chunks(SCORING_CHUNK_ROWS):
        start = chunk.index.start
        details = detector.score_details(chunk)
        stop = start + len(details.scores)
        scores[start:stop] = details.scores
        column_errors = details.column_errors
        top_columns[start:stop] = np.where(column_errors.sum(axis=1) > 0, column_errors.argmax(axis=1), -1)
        hits = np.flatnonzero(details.scores > threshold)
        anomalous.extend(int(hit) + start for hit in hits)
        row_values.extend(chunk.iloc[hits].to_numpy(dtype=object))
        explanations.extend(detector.explain(details, hits, TOP_FEATURES))
        progress.set(start_percent + stop / table.row_count * (90 - start_percent))
    # Highest score first; equal scores keep the file's row order, so pages are stable.
    order = np.argsort(-scores[anomalous], kind="stable")
    names = table.columns
    anomalies = [
        {
            "row": anomalous[index],
            "score": float(scores[anomalous[index]]),
            "values": {name: json_value(value) for name, value in zip(names, row_values[index], strict=True)},
            "top_features": [
                {
                    "column": feature["column"],
                    "share": round(feature["share"], 4),
                    "expected": json_value(feature["expected"]),
                }
                for feature in explanations[index]
            ],
        }
        for index in order
    ]
    return ScoredTable(scores, top_columns, detector.feature_names, anomalies)


def _train_on_dataset(table: pd.DataFrame, threshold_percentile: float, epochs: int) -> TabularAnomalyDetector:
    """The slow fallback path: train a detector on the dataset itself (AUTOENCODER_FALLBACK_TRAIN=true)."""
    detector = TabularAnomalyDetector(threshold_percentile=threshold_percentile, random_state=0)
    detector.train(table, epochs=epochs, verbose=0)
    return detector


def _user_message(error: Exception) -> str:
    if isinstance(error, ValueError | RuntimeError):
        return str(error)
    return f"Internal error while analysing ({type(error).__name__}): see the server log, then analyze again."
