"""Sweeps the job workers run every few seconds: nothing waits forever, nothing is stored for nobody.

- A queued analysis whose deployment model version no live worker serves (the model was replaced or removed on
  every worker's disk) is failed with the reason once it has waited ``UNSERVED_GRACE_SECONDS``: during a rolling
  deploy, a worker that still serves the old version keeps it alive.
- GridFS files older than ``ORPHAN_FILE_AGE_SECONDS`` that belong to nothing (a process died between storing a
  file and recording what it belongs to: an upload, an analysis's arrays, a model version's files) are deleted
  every ``ORPHAN_SWEEP_SECONDS``.
Every worker runs them; they are idempotent, so several workers sweeping at once do no harm.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from app.core.config import Settings
from app.core.states import AnalysisStatus
from app.crud import analyses, datasets, files, user_models, workers
from app.db.collections import MODELS_BUCKET, RESULTS_BUCKET, UPLOADS_BUCKET, Database
from app.services.analysis_results import ANALYSIS_KEY

logger = logging.getLogger(__name__)

# Files looked at per bucket and sweep: bounds a sweep's work; the rest waits for the next one.
SWEEP_BATCH = 500


class Maintenance:
    """The sweeps, each run when it is due."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._orphans_swept_at = -float("inf")

    async def run_due(self, database: Database) -> None:
        """Run the sweeps that are due now."""
        await fail_unserved_analyses(database, grace_seconds=self.settings.unserved_grace_seconds)
        if time.monotonic() - self._orphans_swept_at >= self.settings.orphan_sweep_seconds:
            await sweep_orphan_files(database, older_than_seconds=self.settings.orphan_file_age_seconds)
            self._orphans_swept_at = time.monotonic()


async def fail_unserved_analyses(database: Database, *, grace_seconds: float) -> int:
    """Fail queued analyses no live worker can run, once they have waited ``grace_seconds``; how many."""
    live = await workers.live(database)
    if not live:
        return 0  # nobody to run them yet (workers starting): they wait
    served = sorted({version for worker in live for version in worker.versions})
    stuck = await analyses.fail_unserved(
        database,
        served_versions=served,
        queued_before=datetime.now(UTC) - timedelta(seconds=grace_seconds),
        error="No worker serves the model version this analysis was queued for (the model was replaced or "
        "removed): analyze again to use the model served now.",
    )
    for analysis in stuck:
        logger.warning(
            "Analysis %s failed: no worker serves model %r version %s",
            analysis.id,
            analysis.model.name,
            analysis.model.version,
        )
    return len(stuck)


async def sweep_orphan_files(database: Database, *, older_than_seconds: float) -> int:
    """Delete GridFS files older than ``older_than_seconds`` that no dataset or analysis refers to; how many."""
    written_before = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
    removed = 0
    uploads = await files.find_older_than(database, UPLOADS_BUCKET, written_before, SWEEP_BATCH)
    referenced = await datasets.referenced_file_ids(database, [stored.id for stored in uploads])
    orphans = [stored.id for stored in uploads if stored.id not in referenced]
    await files.delete(database, UPLOADS_BUCKET, orphans)
    removed += len(orphans)

    results = await files.find_older_than(database, RESULTS_BUCKET, written_before, SWEEP_BATCH)
    owners = await analyses.find_many(
        database, {str(stored.metadata.get(ANALYSIS_KEY)) for stored in results if stored.metadata.get(ANALYSIS_KEY)}
    )
    orphans = []
    for stored in results:
        owner = owners.get(str(stored.metadata.get(ANALYSIS_KEY)))
        # A running analysis may be writing this file now; any other keeps only the files its results name.
        if owner is None or (owner.status != AnalysisStatus.ANALYZING and stored.id not in owner.file_ids):
            orphans.append(stored.id)
    await files.delete(database, RESULTS_BUCKET, orphans)
    removed += len(orphans)

    models = await files.find_older_than(database, MODELS_BUCKET, written_before, SWEEP_BATCH)
    referenced = await user_models.referenced_file_ids(database, [stored.id for stored in models])
    orphans = [stored.id for stored in models if stored.id not in referenced]
    await files.delete(database, MODELS_BUCKET, orphans)
    removed += len(orphans)
    if removed:
        logger.info("Removed %d stored files that belonged to nothing", removed)
    return removed
