"""One training of a user's model, as a worker runs it: sample the dataset, train with the CLI's own function,
store the files, then record the version.

The dataset's rows are taken as normal (rows its owner labelled anomalies are left out), a uniform sample of at
most ``TRAINING_MAX_ROWS`` of them (drawn from the training's seed when it has one), so memory is bounded
whatever the dataset's size. The version's files are stored first and its document recorded last, while the
lease holds: a version that can be listed has every file, and an attempt that lost its lease (or was stopped)
removes what it stored.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from app.core import metrics
from app.core.states import TrainingStatus
from app.core.structured_log import TRAINING_LOGGER, log_event
from app.crud import datasets, labels, trainings, user_models, users
from app.crud.trainings import Training
from app.crud.user_models import ModelVersion
from app.jobs.attempts import MAX_ATTEMPTS
from app.jobs.context import Timings, WorkerContext
from app.jobs.lease import LeaseLostError, Progress
from app.services import datasets as dataset_service
from app.services import model_files
from app.services.datasets import TRAINING_DATASET_DELETED
from app.services.table_snapshot import TableSnapshot
from app.utils.training import EpochReport, TrainedModel, TrainingParameters, train_model, usable_rows

logger = logging.getLogger(__name__)
training_log = logging.getLogger(TRAINING_LOGGER)

LOADED_PERCENT = 5
TRAINED_PERCENT = 95


class TrainingInputError(ValueError):
    """The training cannot run on this dataset as asked; the message says why and what to do."""


@dataclass(frozen=True)
class TrainingSample:
    """The rows a model trains on, and how they were chosen."""

    frame: pd.DataFrame
    dataset_rows: int
    labelled_anomalies: int


class TrainingJob:
    """One claimed attempt of a training (a ``ClaimedJob``)."""

    kind = "training"
    done_outcome = "trained"

    def __init__(self, context: WorkerContext, training: Training) -> None:
        self.context = context
        self.training = training
        self.job_id = training.id
        self.attempt = training.attempts
        self.lease_seconds = context.settings.analysis_lease_seconds
        started = training.started_at
        self.queued_seconds = (started - training.created_at).total_seconds() if started else None

    def interrupted_message(self) -> str:
        """Why a training interrupted too often fails."""
        return (
            f"The training was interrupted {MAX_ATTEMPTS} times (its worker stopped, or the database was "
            "unreachable, each time); the dataset may be too large for the worker's memory. Train on a smaller "
            "dataset, or lower TRAINING_MAX_ROWS, or try again once the service is healthy."
        )

    async def renew(self, progress: Progress) -> bool:
        """Record progress and extend the lease; note a request to stop (cancelled, dataset deleted)."""
        current = await trainings.heartbeat(
            self.context.database,
            self.training.id,
            worker_id=self.context.worker_id,
            attempt=self.attempt,
            progress={"percent": progress.percent, **progress.details},
            lease_seconds=self.lease_seconds,
        )
        if current is None:
            return False
        if current.stop_reason is not None:
            progress.stop_reason = current.stop_reason
        return True

    async def run(self, progress: Progress, timings: Timings) -> dict[str, Any]:
        """Train and record the new version; what the log line adds."""
        result = await self._train(progress, timings)
        return {"model": result["model"], "version": result["version"], "rows": result["rows_used"]}

    async def _train(self, progress: Progress, timings: Timings) -> dict[str, Any]:
        database = self.context.database
        dataset = await datasets.find(database, self.training.dataset_id)
        if dataset is None:
            raise TrainingInputError(TRAINING_DATASET_DELETED)
        table = await dataset_service.load_snapshot(database, dataset)
        anomalous_rows = await labels.anomalous_rows(database, dataset.id)
        sample = await self.context.in_background(self._sample, table, anomalous_rows, dataset.filename)
        timings.lap("load")
        progress.set(LOADED_PERCENT)
        parameters = TrainingParameters(**self.training.parameters)
        losses: list[float] = []
        val_losses: list[float] = []

        def report_epoch(epoch: EpochReport) -> None:
            losses.append(epoch.loss)
            if epoch.val_loss is not None:
                val_losses.append(epoch.val_loss)
            share = epoch.epoch / epoch.epochs
            progress.set(
                LOADED_PERCENT + share * (TRAINED_PERCENT - LOADED_PERCENT),
                epoch=epoch.epoch,
                epochs=epoch.epochs,
                loss=list(losses),
                val_loss=list(val_losses),
            )

        with tempfile.TemporaryDirectory(prefix="training-") as folder:
            directory = Path(folder) / self.training.name
            trained = await self.context.in_background(
                lambda: train_model(sample.frame, directory, parameters, on_epoch=report_epoch)
            )
            timings.lap("train")
            progress.check()
            return await self._record(trained, sample, parameters, progress, timings)

    def _sample(self, table: TableSnapshot, anomalous_rows: list[int], filename: str) -> TrainingSample:
        """The rows to train on: not labelled anomalous, uniformly sampled down to the bound, columns excluded."""
        keep = np.setdiff1d(np.arange(table.row_count), np.asarray(anomalous_rows, dtype=np.int64))
        left_out = table.row_count - len(keep)
        limit = self.context.settings.training_max_rows
        if len(keep) > limit:
            rng = np.random.default_rng(self.training.parameters.get("seed"))
            keep = np.sort(rng.choice(keep, limit, replace=False))
        frame = table.take(keep).drop(columns=self.training.exclude_columns).reset_index(drop=True)
        frame = usable_rows(frame, f"The dataset {filename!r} (its rows not labelled as anomalies)")
        return TrainingSample(frame, table.row_count, left_out)

    async def _record(
        self,
        trained: TrainedModel,
        sample: TrainingSample,
        parameters: TrainingParameters,
        progress: Progress,
        timings: Timings,
    ) -> dict[str, Any]:
        """Store the files, then the version, then complete the training: each step only while the lease holds."""
        database = self.context.database
        training = self.training
        metadata = {
            "owner_id": training.owner_id,
            model_files.TRAINING_KEY: training.id,
            model_files.ATTEMPT_KEY: self.attempt,
        }
        file_ids = await model_files.store_folder(database, trained.directory, metadata)
        version: ModelVersion | None = None
        try:
            dataset = await datasets.find(database, training.dataset_id)
            if dataset is None:
                raise TrainingInputError(TRAINING_DATASET_DELETED)
            await self._holds_lease()
            owner = await users.find_by_id(database, training.owner_id)
            detector = trained.detector
            number = await user_models.next_number(database, owner_id=training.owner_id, name=training.name)
            timings.lap("store")
            lineage = {
                "training_id": training.id,
                "dataset_id": dataset.id,
                "filename": dataset.filename,
                "sha256": dataset.sha256,
                "dataset_rows": sample.dataset_rows,
                "rows_used": len(sample.frame),
                "labelled_anomalies_left_out": sample.labelled_anomalies,
                "exclude_columns": training.exclude_columns,
                "trained_by": owner.username if owner else None,
                "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "parameters": parameters.to_dict(),
                "epochs_run": trained.epochs_run,
                "validation": trained.validation.to_dict(),
                "timings": timings.total(),
            }
            version = await user_models.insert_version(
                database,
                owner_id=training.owner_id,
                name=training.name,
                number=number,
                version=str(detector.model_info["version"]),
                files=file_ids,
                features=detector.feature_names,
                threshold=detector.threshold,
                threshold_percentile=detector.threshold_percentile,
                dropped_columns=detector.dropped_columns,
                lineage=lineage,
                training_id=training.id,
            )
            if version is None:
                raise LeaseLostError  # an earlier attempt of this training recorded its version
            await user_models.activate(database, owner_id=training.owner_id, name=training.name, number=number)
            result = {
                "model": training.name,
                "version": number,
                "model_version": version.version,
                "threshold": detector.threshold,
                "threshold_percentile": detector.threshold_percentile,
                "features": detector.feature_names,
                "dropped_columns": detector.dropped_columns,
                "rows_used": len(sample.frame),
                "epochs_run": trained.epochs_run,
                "validation": trained.validation.to_dict(),
            }
            completed = await trainings.complete(
                database, training.id, worker_id=self.context.worker_id, attempt=self.attempt, result=result,
                progress={**progress.details, "percent": 100}, timings=timings.total(),
            )  # fmt: skip
            if not completed:
                raise LeaseLostError
        except BaseException:
            if version is not None:
                await user_models.delete_version_of_training(database, training.id)
            await model_files.delete_attempt(database, training_id=training.id, attempt=self.attempt)
            raise
        return result

    async def _holds_lease(self) -> None:
        held = await trainings.holds_lease(
            self.context.database, self.training.id, worker_id=self.context.worker_id, attempt=self.attempt
        )
        if not held:
            raise LeaseLostError

    async def after_success(self) -> None:
        """Nothing to tidy: the version is recorded and active."""

    async def release(self) -> None:
        """Put the training back in the queue, uncounted."""
        await trainings.release(
            self.context.database, self.training.id, worker_id=self.context.worker_id, attempt=self.attempt
        )

    async def requeue(self) -> None:
        """Put the training back in the queue; the attempt counts."""
        await trainings.requeue(
            self.context.database, self.training.id, worker_id=self.context.worker_id, attempt=self.attempt
        )

    async def discard(self) -> None:
        """Trainings are never discarded: a deleted dataset fails them with the reason (see ``stop``)."""

    async def stop(self, reason: str, timings: Timings) -> str:
        """End a training its owner cancelled (``cancelled``) or whose dataset was deleted (``failed``)."""
        current = await trainings.find(self.context.database, self.training.id)
        status = TrainingStatus.FAILED if current and current.stop_status == "failed" else TrainingStatus.CANCELLED
        await self._end(status, reason, timings)
        return status.value

    async def fail(self, message: str, timings: Timings) -> None:
        """End the training as failed with the reason."""
        await self._end(TrainingStatus.FAILED, message, timings)

    async def _end(self, status: TrainingStatus, reason: str, timings: Timings) -> None:
        await trainings.end(
            self.context.database,
            self.training.id,
            worker_id=self.context.worker_id,
            attempt=self.attempt,
            status=status,
            error=reason,
            timings=timings.total(),
        )

    def report(self, outcome: str, timings: Timings, **fields: Any) -> None:
        """One structured log line per attempt, and its duration in the metrics."""
        spent = timings.total()
        metrics.TRAINING_SECONDS.labels(outcome).observe(spent["total_seconds"])
        training = self.training
        log_event(
            training_log,
            "training",
            outcome=outcome,
            training_id=training.id,
            dataset_id=training.dataset_id,
            owner_id=training.owner_id,
            name=training.name,
            worker=self.context.worker_id,
            attempt=training.attempts,
            **fields,
            timings=spent,
        )
