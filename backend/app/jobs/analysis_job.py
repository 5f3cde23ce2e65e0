"""One analysis, as a worker runs it: load the stored table and the model, score, store the results.

Every write of the results is fenced by the attempt's lease: the arrays and pages are tagged with the attempt
and written only while the lease is held (checked before each write), and the analysis becomes ``analyzed``
with a write that names the lease owner and attempt. A worker that lost its lease mid-way changes nothing
users can see, and removes what it wrote.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from bson.raw_bson import RawBSONDocument
from pymongo.errors import PyMongoError

from app.core import metrics
from app.core.states import AnalysisStatus, ModelKind
from app.core.structured_log import ANALYSIS_LOGGER, log_event
from app.crud import analyses, anomaly_pages, datasets, user_models
from app.crud.analyses import Analysis, ResultsRecord
from app.jobs.attempts import MAX_ATTEMPTS, JobGoneError, ReleaseJobError
from app.jobs.context import Timings, WorkerContext
from app.jobs.lease import LeaseLostError, Progress
from app.services import analysis_results, scoring
from app.services import datasets as dataset_service
from app.services.table_snapshot import TableSnapshot
from app.utils.anomaly_detector import TabularAnomalyDetector

logger = logging.getLogger(__name__)
analysis_log = logging.getLogger(ANALYSIS_LOGGER)

# The share of progress each step reaches.
LOADED_PERCENT = 10
TRAINED_PERCENT = 50
SCORED_PERCENT = 90


class AnalysisJob:
    """One claimed attempt of an analysis (a ``ClaimedJob``)."""

    kind = "analysis"
    done_outcome = "analyzed"

    def __init__(self, context: WorkerContext, analysis: Analysis) -> None:
        self.context = context
        self.analysis = analysis
        self.job_id = analysis.id
        self.attempt = analysis.attempts
        self.lease_seconds = context.settings.analysis_lease_seconds
        started = analysis.started_at
        self.queued_seconds = (started - analysis.created_at).total_seconds() if started else None

    def interrupted_message(self) -> str:
        """Why an analysis interrupted too often fails."""
        return (
            f"The analysis was interrupted {MAX_ATTEMPTS} times (its worker stopped, or the database was unreachable, "
            "each time); the file may be too large for the worker's memory. Try a smaller file, or analyze again "
            "once the service is healthy."
        )

    async def renew(self, progress: Progress) -> bool:
        """Record progress and extend the lease."""
        return await analyses.heartbeat(
            self.context.database,
            self.analysis.id,
            worker_id=self.context.worker_id,
            attempt=self.attempt,
            progress=progress.percent,
            lease_seconds=self.lease_seconds,
        )

    async def run(self, progress: Progress, timings: Timings) -> dict[str, Any]:
        """Score the dataset and store the results; the counts the log line adds."""
        try:
            record = await self._analyse(progress, timings)
        except (LeaseLostError, JobGoneError, ReleaseJobError):
            raise
        except Exception as error:
            # A dataset deleted mid-way fails the reads of its files: that is a deletion, not a failure.
            if await datasets.find(self.context.database, self.analysis.dataset_id) is None:
                raise JobGoneError from error
            raise
        metrics.ANALYSIS_ROWS_SCORED.inc(record.row_count)
        return {"rows": record.row_count, "anomaly_count": record.anomaly_count}

    async def _analyse(self, progress: Progress, timings: Timings) -> ResultsRecord:
        database = self.context.database
        dataset = await datasets.find(database, self.analysis.dataset_id)
        if dataset is None:
            raise JobGoneError
        table = await dataset_service.load_snapshot(database, dataset)
        timings.lap("load")
        progress.set(LOADED_PERCENT)
        detector, threshold = await self._detector(table, timings, progress)
        start = progress.percent

        def report_scored(share: float) -> None:
            progress.set(start + share * (SCORED_PERCENT - start))

        scored = await self.context.in_background(
            lambda: scoring.score_rows(detector, table, threshold, on_progress=report_scored)
        )
        timings.lap("score")
        return await self._store(detector, table, scored, threshold, progress, timings)

    async def after_success(self) -> None:
        """After the results are stored: remove what they supersede (see ``_retire_superseded``)."""
        try:
            await self._retire_superseded()
        except PyMongoError as error:  # the results are stored: a later completion tidies up instead
            logger.warning("Analysis %s stored, but superseded results were not removed (%s)", self.analysis.id, error)

    async def release(self) -> None:
        """Put the analysis back in the queue, uncounted."""
        await analyses.release(
            self.context.database, self.analysis.id, worker_id=self.context.worker_id, attempt=self.attempt
        )

    async def requeue(self) -> None:
        """Put the analysis back in the queue; the attempt counts."""
        metrics.ANALYSIS_FAILURES.labels("database").inc()
        await analyses.requeue(
            self.context.database, self.analysis.id, worker_id=self.context.worker_id, attempt=self.attempt
        )

    async def discard(self) -> None:
        """The dataset is gone: remove what a delete racing this analysis may have missed."""
        database = self.context.database
        removed = await analyses.delete_for_dataset(database, self.analysis.dataset_id)
        await analysis_results.delete(database, [self.analysis, *removed])
        logger.info("Analysis %s dropped: its dataset %s was deleted", self.analysis.id, self.analysis.dataset_id)

    async def stop(self, reason: str, timings: Timings) -> str:
        """Analyses are never asked to stop mid-way (a newer request only cancels queued ones)."""
        await self.fail(reason, timings)
        return "failed"

    async def fail(self, message: str, timings: Timings) -> None:
        """Mark the analysis failed, and remove what its interrupted attempts left."""
        metrics.ANALYSIS_FAILURES.labels("error").inc()
        database = self.context.database
        await analyses.fail(
            database,
            self.analysis.id,
            worker_id=self.context.worker_id,
            attempt=self.attempt,
            error=message,
            timings=timings.total(),
        )
        await analysis_results.delete(database, [self.analysis])

    def report(self, outcome: str, timings: Timings, **fields: Any) -> None:
        """One structured log line per attempt, and its duration in the metrics."""
        spent = timings.total()
        metrics.ANALYSIS_SECONDS.labels(outcome).observe(spent["total_seconds"])
        analysis = self.analysis
        log_event(
            analysis_log,
            "analysis",
            outcome=outcome,
            session_id=analysis.id,
            dataset_id=analysis.dataset_id,
            owner_id=analysis.owner_id,
            worker=self.context.worker_id,
            attempt=analysis.attempts,
            model=analysis.model.name,
            model_version=analysis.model.version,
            **fields,
            timings=spent,
        )

    async def _detector(
        self, table: TableSnapshot, timings: Timings, progress: Progress
    ) -> tuple[TabularAnomalyDetector, float]:
        choice = self.analysis.model
        percentile = self.analysis.threshold_percentile
        if choice.kind == ModelKind.FALLBACK:
            epochs = self.context.settings.autoencoder_fallback_epochs
            detector = await self.context.in_background(_train_on_dataset, table.rows(), percentile, epochs)
            timings.lap("train")
            progress.set(TRAINED_PERCENT)
            return detector, detector.threshold
        if choice.kind == ModelKind.USER:
            version = await user_models.find_version_by_id(self.context.database, choice.version_id or "")
            if version is None:
                raise RuntimeError(
                    f"Version {choice.number} of your model {choice.name!r} was deleted before the analysis ran: "
                    "analyze again to use its active version."
                )
            detector = await self.context.user_detector(version)
        else:
            model = self.context.registry.by_version(choice.version)
            if model is None:
                raise ReleaseJobError  # its folder changed since the claim: a worker serving it takes it up
            detector = await self.context.deployment_detector(model)
        if detector.model_info["version"] != choice.version:
            raise ReleaseJobError  # the files changed between reading the card and loading the model
        threshold = (
            detector.threshold if percentile == detector.threshold_percentile else detector.threshold_at(percentile)
        )
        return detector, threshold

    async def _holds_lease(self) -> None:
        held = await analyses.holds_lease(
            self.context.database, self.analysis.id, worker_id=self.context.worker_id, attempt=self.attempt
        )
        if not held:
            raise LeaseLostError

    async def _store(
        self,
        detector: TabularAnomalyDetector,
        table: TableSnapshot,
        scored: scoring.ScoredRows,
        threshold: float,
        progress: Progress,
        timings: Timings,
    ) -> ResultsRecord:
        database = self.context.database
        try:
            await self._holds_lease()
            arrays = await analysis_results.write_arrays(
                database, self.analysis.id, attempt=self.attempt, scores=scored.scores, top_columns=scored.top_columns
            )
            drift_file_id = await analysis_results.write_drift(
                database, self.analysis.id, attempt=self.attempt, report=scored.drift.to_dict()
            )
            await self._store_pages(detector, table, scored, progress)
            timings.lap("store")
            record = ResultsRecord(
                row_count=len(scored.scores),
                anomaly_count=len(scored.ranking),
                threshold=threshold,
                timings=timings.total(),
                scores_file_id=arrays.scores_file_id,
                top_columns_file_id=arrays.top_columns_file_id,
                drift_file_id=drift_file_id,
                feature_names=scored.feature_names,
                drift=scoring.drift_summary(scored.drift),
                training_score_quantiles=scoring.training_score_quantiles(detector),
            )
            completed = await analyses.complete(
                database, self.analysis.id, worker_id=self.context.worker_id, attempt=self.attempt, results=record
            )
            if not completed:
                raise LeaseLostError
        except BaseException:
            await analysis_results.delete_attempt(database, self.analysis.id, attempt=self.attempt)
            raise
        return record

    async def _store_pages(
        self, detector: TabularAnomalyDetector, table: TableSnapshot, scored: scoring.ScoredRows, progress: Progress
    ) -> None:
        """Explain and store the anomalies a batch at a time, in rank order, each batch only while the lease holds."""
        page = 0
        total = max(1, len(scored.ranking))
        for first_rank, rows in scoring.ranked_batches(scored.ranking):
            pages = await self.context.in_background(
                self._encoded_pages, detector, table, rows, scored.scores, page, first_rank
            )
            progress.check()
            await self._holds_lease()
            await anomaly_pages.insert_encoded(self.context.database, pages)
            page += len(pages)
            progress.set(SCORED_PERCENT + (first_rank + len(rows)) / total * (99 - SCORED_PERCENT))

    def _encoded_pages(
        self,
        detector: TabularAnomalyDetector,
        table: TableSnapshot,
        rows: np.ndarray,
        scores: np.ndarray,
        first_page: int,
        first_rank: int,
    ) -> list[RawBSONDocument]:
        items = scoring.anomaly_items(detector, table, rows, scores)
        return anomaly_pages.encode_pages(
            self.analysis.id, self.attempt, first_page=first_page, first_rank=first_rank, items=items
        )

    async def _retire_superseded(self) -> None:
        """Delete the dataset's analyses this one supersedes, and this one if a newer request already finished.

        The dataset's latest request is what users see; an analysis that completes after a newer request was made
        is kept only while that newer one is still on its way (it may be asked for again meanwhile).
        """
        database = self.context.database
        completed = await analyses.find(database, self.analysis.id)
        dataset = await datasets.find(database, self.analysis.dataset_id)
        if dataset is None or completed is None:
            return  # deleted meanwhile: the delete removed the results too
        await analysis_results.delete_other_attempts(database, completed)
        latest = dataset.latest_session_id
        finished = (AnalysisStatus.ANALYZED, AnalysisStatus.FAILED, AnalysisStatus.CANCELLED)
        others = [
            analysis
            for analysis in await analyses.find_for_dataset(database, dataset.id)
            if analysis.id not in (self.analysis.id, latest) and analysis.status in finished
        ]
        if latest not in (None, self.analysis.id):
            newest = await analyses.find(database, latest)
            if newest is not None and newest.status == AnalysisStatus.ANALYZED:
                others.append(completed)
        if others:
            await analysis_results.delete(database, others)
            await analyses.delete(database, [analysis.id for analysis in others])
        logger.debug("Analysis %s retired %d superseded analyses", self.analysis.id, len(others))


def _train_on_dataset(table: pd.DataFrame, threshold_percentile: float, epochs: int) -> TabularAnomalyDetector:
    """The slow fallback path: train a detector on the dataset itself (AUTOENCODER_FALLBACK_TRAIN=true)."""
    detector = TabularAnomalyDetector(threshold_percentile=threshold_percentile, random_state=0)
    detector.train(table, epochs=epochs, verbose=0)
    return detector
