"""One batch run, from the inputs to the committed output folder and its summary.

1. On the client, before any cluster exists: the model folder, the output folder and the input files.
2. On the workers: each file's columns and partitions (a CSV file is scanned once, in parallel per file); then
   every worker has the model loaded, and one task checks every file's columns against it, so a mismatch
   anywhere stops the run before anything is scored.
3. Every partition is a task that writes its own part into a temporary folder beside the output; then parts
   are brought to one schema, the summary is written, and the folder is swapped into place.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from distributed import Future, as_completed

from app.batch.cluster import Cluster, dask_cluster
from app.batch.errors import BatchInputError
from app.batch.inputs import (
    DEFAULT_PARTITION_ROWS,
    MAX_PARTITIONS,
    FilePlan,
    InputFile,
    Partition,
    find_inputs,
    plan_file,
    too_many_partitions,
)
from app.batch.model import (
    ModelDescription,
    ModelLocation,
    ModelPlugin,
    describe_model,
    find_model,
    load_model_here,
)
from app.batch.output import check_output, conform_part, make_readable, unified_schema, write_summary
from app.batch.progress import ProgressLine
from app.batch.scoring import PartitionResult, score_partition, worker_report
from app.core.config import get_settings
from app.services.results_export import SCORE_COLUMNS
from app.utils.model_store import write_atomically


@dataclass(frozen=True)
class BatchOptions:
    """What ``python -m app.batch score`` was asked to do."""

    inputs: list[str]
    output: str
    model: str | None = None
    scheduler: str | None = None
    workers: int | None = None
    partition_rows: int = DEFAULT_PARTITION_ROWS
    threshold_percentile: float | None = None
    overwrite: bool = False
    connect_timeout: float = 10.0


def run_batch(options: BatchOptions, progress: ProgressLine) -> dict[str, Any]:
    """Score every input row and commit the output folder; return the summary written beside the parts.

    ``BatchInputError`` for anything the user must fix; then no output is written and an earlier one is kept.
    """
    started = time.perf_counter()
    model = find_model(options.model, get_settings())
    output = check_output(options.output, overwrite=options.overwrite)
    sources = find_inputs(options.inputs)
    with dask_cluster(
        scheduler=options.scheduler, workers=options.workers, connect_timeout=options.connect_timeout
    ) as cluster:
        plugin = ModelPlugin(f"anomaly-batch-model-{secrets.token_hex(4)}", model.path)
        cluster.client.register_plugin(plugin)
        try:
            progress.note(f"Reading the layout of {len(sources):,} input file(s) on {_where(cluster)}...")
            plans = _plan(cluster, sources, options.partition_rows)
            partitions = _numbered(plans, options.partition_rows)
            progress.note(
                f"{sum(part.rows for part in partitions):,} rows in {len(partitions):,} partition(s); loading "
                f"model {model.name!r} on every worker and checking every file's columns..."
            )
            _load_everywhere(cluster, plugin.name)
            description = _checked_model(cluster, plugin.name, plans, options.threshold_percentile)
            run = _ScoringRun(cluster, plugin.name, model, description, plans, partitions, options, progress)
            write_atomically(output, lambda staging: run.write(staging, output=output, started=started))
        finally:
            if not cluster.is_local:
                # Frees the model on a shared cluster's workers; a scheduler already gone has nothing to free,
                # and its error must not hide the one that ended the run.
                with contextlib.suppress(OSError, TimeoutError):
                    cluster.client.unregister_worker_plugin(plugin.name)
    assert run.summary is not None
    return run.summary


def _where(cluster: Cluster) -> str:
    workers = f"{cluster.workers} worker{'s' if cluster.workers != 1 else ''}"
    return f"a local cluster of {workers}" if cluster.is_local else f"{cluster.scheduler} ({workers})"


def _gathered(cluster: Cluster, futures: list[Future]) -> list[Any]:
    """The futures' results in order; on the first error the others are cancelled."""
    try:
        return list(cluster.client.gather(futures))
    finally:
        cluster.client.cancel(futures)


def _plan(cluster: Cluster, sources: list[InputFile], partition_rows: int) -> list[FilePlan]:
    token = secrets.token_hex(4)
    plans: list[FilePlan] = _gathered(cluster, [
        cluster.client.submit(plan_file, source, partition_rows, key=f"plan-{index}-{token}")
        for index, source in enumerate(sources)
    ])  # fmt: skip
    for plan in plans:
        repeated = sorted({name for name in plan.columns if plan.columns.count(name) > 1})
        if repeated:
            raise BatchInputError(
                f"{plan.source.url} has more than one column named {', '.join(repeated)}: rename the repeats."
            )
        clashing = [name for name in SCORE_COLUMNS if name in plan.columns]
        if clashing:
            raise BatchInputError(
                f"{plan.source.url} already has columns {', '.join(clashing)} (a scored output?): score the "
                "original input, or rename those columns."
            )
    return plans


def _numbered(plans: list[FilePlan], partition_rows: int) -> list[Partition]:
    partitions = [part for plan in plans for part in plan.partitions]
    if len(partitions) > MAX_PARTITIONS:
        raise too_many_partitions("The inputs make", partition_rows)
    if not partitions:
        raise BatchInputError("The inputs hold no data rows: check that the files have rows after their header.")
    return [replace(part, index=index) for index, part in enumerate(partitions)]


def _load_everywhere(cluster: Cluster, plugin_name: str) -> None:
    """Wait until every worker has loaded the model (each started as the plugin reached it), so scoring starts
    on all of them at once and its timing is the scoring's alone.

    One task per worker, asked of that worker; another may run it if that worker has left meanwhile (it then
    only waits for its own model), so a worker leaving never leaves a task waiting for it forever.
    """
    token = secrets.token_hex(4)
    _gathered(cluster, [
        cluster.client.submit(load_model_here, plugin_name, workers=[address], allow_other_workers=True,
                              key=f"load-model-{index}-{token}")
        for index, address in enumerate(cluster.client.scheduler_info()["workers"])
    ])  # fmt: skip


def _checked_model(
    cluster: Cluster, plugin_name: str, plans: list[FilePlan], threshold_percentile: float | None
) -> ModelDescription:
    column_lists = list(dict.fromkeys(tuple(plan.columns) for plan in plans))
    future = cluster.client.submit(
        describe_model, plugin_name, [list(columns) for columns in column_lists], threshold_percentile,
        key=f"describe-model-{secrets.token_hex(4)}",
    )  # fmt: skip
    description: ModelDescription = future.result()
    problems = dict(zip(column_lists, description.column_problems, strict=True))
    for plan in plans:
        problem = problems[tuple(plan.columns)]
        if problem:
            raise BatchInputError(f"{plan.source.url}: {problem}")
    return description


class _ScoringRun:
    """Scoring, then the summary, inside the temporary output folder that ``write_atomically`` swaps in."""

    def __init__(
        self,
        cluster: Cluster,
        plugin_name: str,
        model: ModelLocation,
        description: ModelDescription,
        plans: list[FilePlan],
        partitions: list[Partition],
        options: BatchOptions,
        progress: ProgressLine,
    ) -> None:
        self.cluster, self.plugin_name, self.model, self.description = cluster, plugin_name, model, description
        self.plans, self.partitions, self.options, self.progress = plans, partitions, options, progress
        self.summary: dict[str, Any] | None = None

    def write(self, staging: Path, *, output: Path, started: float) -> None:
        """Fill ``staging``: every part, in one schema, and the summary (written last)."""
        make_readable(staging)
        scoring_started = time.perf_counter()
        results = self._score(staging)
        scoring_seconds = time.perf_counter() - scoring_started
        versions = {result.model_version for result in results} - {self.description.version}
        if versions:
            raise BatchInputError(
                f"The model at {self.model.path} changed during the run (versions {', '.join(sorted(versions))} "
                f"besides {self.description.version}): run again once it is no longer being replaced."
            )
        columns = self._conform(staging, results)
        reports = self.cluster.client.run(worker_report, self.plugin_name)
        seconds = time.perf_counter() - started
        self.summary = self._summary(results, columns, reports, output=output, seconds=(seconds, scoring_seconds))
        write_summary(staging, self.summary)

    def _score(self, staging: Path) -> list[PartitionResult]:
        client = self.cluster.client
        total_rows = sum(part.rows for part in self.partitions)
        self.progress.start(total_rows=total_rows, total_partitions=len(self.partitions))
        token = secrets.token_hex(4)
        futures = [
            client.submit(
                score_partition,
                part,
                plugin_name=self.plugin_name,
                threshold=self.description.threshold,
                staging=str(staging),
                key=f"score-{part.index}-{token}",
            )
            for part in self.partitions
        ]
        results: list[PartitionResult] = []
        try:
            for _, result in as_completed(futures, loop=client.loop, with_results=True):
                results.append(result)
                self.progress.advance(rows=result.rows)
        finally:
            client.cancel(futures)
            self.progress.finish()
        return sorted(results, key=lambda result: result.index)

    def _conform(self, staging: Path, results: list[PartitionResult]) -> list[dict[str, str]]:
        """Rewrite the parts whose schema is not the common one; the common schema's columns and types."""
        schemas = [result.schema for result in results if result.schema is not None]
        schema = unified_schema(schemas)
        stray = [result.part for result in results if result.schema is not None and result.schema != schema]
        if stray:
            self.progress.note(f"Bringing {len(stray):,} part(s) to the common column types...")
            token = secrets.token_hex(4)
            client = self.cluster.client
            _gathered(self.cluster, [
                client.submit(conform_part, str(staging / str(part)), schema, key=f"conform-{part}-{token}")
                for part in stray
            ])  # fmt: skip
        return [{"name": field.name, "type": str(field.type)} for field in schema]

    def _summary(
        self, results: list[PartitionResult], columns: list[dict[str, str]], reports: dict[str, dict[str, float]],
        *, output: Path, seconds: tuple[float, float],
    ) -> dict[str, Any]:  # fmt: skip
        """The summary; ``seconds``: the whole run's so far, and the scoring's."""
        rows = sum(result.rows for result in results)
        anomalies = sum(result.anomalies for result in results)
        by_worker = {address: {"partitions": 0, "rows": 0, **report} for address, report in sorted(reports.items())}
        for result in results:
            worker = by_worker.setdefault(result.worker, {"partitions": 0, "rows": 0})  # one gone since
            worker["partitions"] += 1
            worker["rows"] += result.rows
        return {
            "rows": rows,
            "anomalies": anomalies,
            "anomaly_rate": anomalies / rows if rows else 0.0,
            "threshold": self.description.threshold,
            "threshold_percentile": self.description.threshold_percentile,
            "model": self.model.name,
            "model_path": self.model.path,
            "model_version": self.description.version,
            "model_trained_at": self.description.trained_at,
            "inputs": [
                {
                    "path": plan.source.url,
                    "format": plan.source.kind,
                    "rows": plan.rows,
                    "partitions": len(plan.partitions),
                }
                for plan in self.plans
            ],
            "partitions": len(self.partitions),
            "partition_rows": self.options.partition_rows,
            "scheduler": self.cluster.scheduler,
            "workers": self.cluster.workers,
            "model_loads": sum(report["model_loads"] for report in reports.values()),
            "by_worker": by_worker,
            "seconds": round(seconds[0], 3),
            "scoring_seconds": round(seconds[1], 3),
            "rows_per_second": round(rows / seconds[1]) if seconds[1] else None,
            "output": str(output),
            "columns": columns,
            "parts": [
                {
                    "file": result.part,
                    "input": self.partitions[result.index].source.url,
                    "first_row": self.partitions[result.index].first_row,
                    "rows": result.rows,
                    "anomalies": result.anomalies,
                }
                for result in results
                if result.part is not None
            ],
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
