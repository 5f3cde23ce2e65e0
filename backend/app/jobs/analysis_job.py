"""One analysis, as a worker runs it: load the stored table and the model, score, store the results.

Every write of the results is fenced by the attempt's lease: the arrays and pages are tagged with the attempt
and written only while the lease is held (checked before each write), and the analysis becomes ``analyzed``
with a write that names the lease owner and attempt. A worker that lost its lease mid-way changes nothing
users can see, and removes what it wrote.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from bson.raw_bson import RawBSONDocument
from pymongo.errors import PyMongoError

from app.core.states import AnalysisStatus, ModelKind
from app.crud import analyses, anomaly_pages, datasets
from app.crud.analyses import Analysis, ResultsRecord
from app.jobs.context import Timings, WorkerContext
from app.jobs.lease import LeaseLostError, Progress
from app.services import analysis_results, scoring
from app.services import datasets as dataset_service
from app.services.table_snapshot import TableSnapshot
from app.utils.anomaly_detector import TabularAnomalyDetector

logger = logging.getLogger(__name__)

# The share of progress each step reaches.
LOADED_PERCENT = 10
TRAINED_PERCENT = 50
SCORED_PERCENT = 90


class DatasetGoneError(Exception):
    """The analysis's dataset was deleted while the analysis waited or ran."""


class ModelNotServedError(Exception):
    """This worker no longer serves the analysis's model version (its folder changed since the claim)."""


class AnalysisJob:
    """Runs one claimed attempt of an analysis."""

    def __init__(self, context: WorkerContext, analysis: Analysis) -> None:
        self.context = context
        self.analysis = analysis
        self.attempt = analysis.attempts

    async def run(self, progress: Progress, timings: Timings) -> ResultsRecord:
        """Score the dataset and store the results; the record that was stored."""
        database = self.context.database
        dataset = await datasets.find(database, self.analysis.dataset_id)
        if dataset is None:
            raise DatasetGoneError
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

    async def tidy_up(self) -> None:
        """After the results are stored: remove what they supersede (see ``_retire_superseded``)."""
        try:
            await self._retire_superseded()
        except PyMongoError as error:  # the results are stored: a later completion tidies up instead
            logger.warning("Analysis %s stored, but superseded results were not removed (%s)", self.analysis.id, error)

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
            raise NotImplementedError("user models")
        model = self.context.registry.by_version(choice.version)
        if model is None:
            raise ModelNotServedError
        detector = await self.context.deployment_detector(model)
        if detector.model_info["version"] != choice.version:
            raise ModelNotServedError  # the folder changed between reading its card and loading it
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
            await self._store_pages(detector, table, scored, progress)
            timings.lap("store")
            record = ResultsRecord(
                row_count=len(scored.scores),
                anomaly_count=len(scored.ranking),
                threshold=threshold,
                timings=timings.total(),
                scores_file_id=arrays.scores_file_id,
                top_columns_file_id=arrays.top_columns_file_id,
                feature_names=scored.feature_names,
                drift=None,
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
