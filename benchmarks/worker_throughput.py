"""Analyses per minute with 1, 2 and 3 job workers on one database, and which processes keep the CPU busy.

    .venv/bin/python benchmarks/worker_throughput.py [--rows 50000] [--runs 3] [--users 10] [--files 4]
        [--workers 1 2 3] [--output FILE.md]

Starts the embedded SecantusDB and one API-only launcher (``JOB_WORKERS=0``) in a fresh data folder, registers
``--users`` users and has each upload ``--files`` CSVs of ``--rows`` rows of the demo schema
(``make_normal_transactions``). Then, for each worker count, it starts that many standalone ``python -m
app.worker`` processes (each warmed up: TensorFlow imported, the model loaded), runs one untimed round of two
analyses per worker, and per run has every user ask at once for a forced analysis of each of their files.
From the moment the last request is answered 202 (the queue is full) until the last analysis finishes, it
counts the analyses that finish (by their ``finished_at``) and reports completed analyses per minute.

While the queue drains, /proc/<pid>/stat of the API process (with its upload parsers), the workers, the
database and this script is sampled; the table beside the figures gives the cores each kept busy on average,
the rest of the machine's load (``other``: anything else running on the host) and its idle time, and the
median seconds an analysis spent in its worker (load, score, store), which grow when workers share a core.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
from harness import (
    CpuMeter,
    Figure,
    Server,
    benchmark_arguments,
    embedded_database,
    embedded_database_pid,
    figures_table,
    login,
    machine,
    running_server,
    running_workers,
    train_model,
    with_descendants,
    write_report,
)

from app.utils.sample_data import make_normal_transactions

DRAIN_POLL_SECONDS = 0.1
DRAIN_TIMEOUT_SECONDS = 1800
# Columns of the CPU table: the process groups sampled, then what /proc/stat says of the rest of the machine.
CPU_COLUMNS = ("API", "workers", "database", "benchmark client", "other", "idle")
# The groups whose CPU time per analysis says what another core buys.
COSTED = ("workers", "database")


@dataclass(frozen=True)
class User:
    """A registered user and the datasets they uploaded."""

    headers: dict[str, str]
    dataset_ids: tuple[str, ...]


@dataclass(frozen=True)
class Drain:
    """One run: the queue filled at once, then drained by the workers."""

    per_minute: float
    cores: dict[str, float]
    worker_seconds: float


@dataclass(frozen=True)
class Throughput:
    """The figures of every worker count, and what kept the CPU busy while each ran."""

    figures: list[Figure]
    cpu_table: str


def upload_files(client: httpx.Client, users: int, files: list[bytes]) -> list[User]:
    """Register ``users`` users and upload every file for each (two uploads at a time, as two parsers run)."""
    accounts = [login(client) for _ in range(users)]

    def upload(job: tuple[dict[str, str], int]) -> str:
        headers, index = job
        answer = client.post(
            "/api/anomaly/datasets/upload", headers=headers, files={"file": (f"file{index}.csv", files[index])}
        )
        answer.raise_for_status()
        dataset_id: str = answer.json()["id"]
        return dataset_id

    with ThreadPoolExecutor(2) as pool:
        ids = [list(pool.map(upload, [(headers, index) for index in range(len(files))])) for headers in accounts]
    return [User(headers, tuple(dataset_ids)) for headers, dataset_ids in zip(accounts, ids, strict=True)]


def queue_analyses(client: httpx.Client, analyses: list[tuple[User, str]]) -> None:
    """Ask for a forced analysis of each ``(user, dataset)`` at once, one thread per user, as users would."""

    def analyze(job: tuple[User, str]) -> None:
        user, dataset_id = job
        client.post(
            f"/api/anomaly/datasets/{dataset_id}/analyze", headers=user.headers, json={"force": True}
        ).raise_for_status()

    with ThreadPoolExecutor(len({id(user) for user, _ in analyses})) as pool:
        list(pool.map(analyze, analyses))


def wait_until_drained(client: httpx.Client) -> None:
    """Poll ``/metrics`` until no analysis is queued or running (counted in the database, over every worker)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        gauges = {
            line.split()[0]: float(line.split()[1])
            for line in client.get("/metrics").text.splitlines()
            if line.startswith(("analysis_queue_depth ", "analyses_running "))
        }
        if gauges.get("analysis_queue_depth") == 0 and gauges.get("analyses_running") == 0:
            return
        time.sleep(DRAIN_POLL_SECONDS)
    raise SystemExit(f"analyses still queued or running after {DRAIN_TIMEOUT_SECONDS} s")


def finished_statuses(client: httpx.Client, analyses: list[tuple[User, str]]) -> list[dict]:
    """The status of each analysed dataset; ``SystemExit`` if any analysis did not end ``analyzed``."""
    statuses = [
        client.get(f"/api/anomaly/datasets/{dataset_id}/status", headers=user.headers).raise_for_status().json()
        for user, dataset_id in analyses
    ]
    failed = [status for status in statuses if status["status"] != "analyzed"]
    if failed:
        raise SystemExit(f"{len(failed)} analyses did not end analyzed: {failed[0]['status']} {failed[0]['error']}")
    return statuses


def drain(
    client: httpx.Client, analyses: list[tuple[User, str]], groups: dict[str, Callable[[], Iterable[int]]]
) -> Drain:
    """Fill the queue with ``analyses`` at once, then measure until the workers have done them all."""
    queue_analyses(client, analyses)
    queued_at = time.time()
    with CpuMeter(groups) as meter:
        wait_until_drained(client)
    statuses = finished_statuses(client, analyses)
    finished = [datetime.fromisoformat(status["finished_at"]).timestamp() for status in statuses]
    counted = [moment for moment in finished if moment > queued_at]
    # The server's total leaves the time queued out: it is the load, score and store the worker did.
    worker_seconds = statistics.median(status["timings"]["total_seconds"] for status in statuses)
    return Drain(60 * len(counted) / (max(finished) - queued_at), meter.cores(), worker_seconds)


def cpu_table(rows: int, drains: dict[int, list[Drain]]) -> str:
    """Markdown: per worker count, the median cores each group kept busy (and its share of the machine)."""
    cores = os.cpu_count() or 1
    lines = [
        f"### What kept the CPU busy while the queue drained ({rows:,}-row CSVs)",
        "",
        f"Machine: {machine()}. Cores busy on average while the queue drained (median of the runs), and the share "
        f"of the machine's {cores} cores; `other` is every process not started by this benchmark (the load "
        "of the host), `idle` what was left. Then the CPU seconds one analysis cost the workers and the database "
        "(cores x 60 / analyses per minute), and the wall-clock seconds an analysis spent in its worker (load, "
        "score, store).",
        "",
        "| job workers | analyses/min | " + " | ".join(CPU_COLUMNS) + " | worker CPU s per analysis "
        "| database CPU s per analysis | seconds per analysis in its worker |",
        "|---" * (len(CPU_COLUMNS) + 5) + "|",
    ]
    for count, runs in drains.items():
        medians = {name: statistics.median(run.cores[name] for run in runs) for name in CPU_COLUMNS}
        cells = [f"{medians[name]:.2f} ({100 * medians[name] / cores:.0f}%)" for name in CPU_COLUMNS]
        costs = [statistics.median(60 * run.cores[name] / run.per_minute for run in runs) for name in COSTED]
        per_minute = statistics.median(run.per_minute for run in runs)
        worker_seconds = statistics.median(run.worker_seconds for run in runs)
        lines.append(
            f"| {count} | {per_minute:,.1f} | " + " | ".join(cells) + " | "
            + " | ".join(f"{cost:.3f}" for cost in costs) + f" | {worker_seconds:.3f} |"
        )  # fmt: skip
    return "\n".join(lines)


def measure_workers(
    client: httpx.Client, server: Server, users: list[User], counts: tuple[int, ...], runs: int
) -> dict[int, list[Drain]]:
    """``runs`` drains of every user's files with each number of workers in ``counts``."""
    analyses = [(user, dataset_id) for user in users for dataset_id in user.dataset_ids]
    drains: dict[int, list[Drain]] = {}
    for count in counts:
        with running_workers(server, count) as workers:
            groups = process_groups(server, [worker.pid for worker in workers])
            drain(client, analyses[: 2 * count], groups)
            drains[count] = [drain(client, analyses, groups) for _ in range(runs)]
        print(f"  {count} job worker(s): {[f'{run.per_minute:.1f}' for run in drains[count]]} analyses/min")
    return drains


def process_groups(server: Server, worker_pids: list[int]) -> dict[str, Callable[[], Iterable[int]]]:
    """The processes whose CPU time is counted: the API (with its upload parsers), the workers, the database and
    this script."""
    database_pid = embedded_database_pid()
    return {
        "API": with_descendants(server.process.pid),
        "workers": lambda: worker_pids,
        "database": lambda: [database_pid],
        "benchmark client": lambda: [os.getpid()],
    }


def measure(
    rows: int,
    runs: int,
    model_dir: Path | None = None,
    *,
    users: int = 10,
    files: int = 4,
    counts: tuple[int, ...] = (1, 2, 3),
) -> Throughput:
    """Analyses per minute with each number of workers, and the CPU table."""
    workdir = Path(tempfile.mkdtemp(prefix="worker-throughput-"))
    if model_dir is None:
        model_dir = train_model("worker-throughput-model-")
    contents = [make_normal_transactions(rows, seed=100 + index).to_csv(index=False).encode() for index in range(files)]
    with (
        embedded_database(workdir) as database_url,
        running_server(workdir, database_url, AUTOENCODER_MODEL_PATH=str(model_dir), JOB_WORKERS="0") as server,
        httpx.Client(base_url=server.url, timeout=120) as client,
    ):
        uploaded = upload_files(client, users, contents)
        drains = measure_workers(client, server, uploaded, counts, runs)
    shutil.rmtree(workdir, ignore_errors=True)
    size = f"{len(contents[0]) / 1e6:.1f} MB"
    figures = [
        Figure(
            f"analyses per minute, {count} job worker{'s' if count > 1 else ''}, {users} users × {files} CSVs of "
            f"{rows:,} rows ({size})", "analyses/min", tuple(run.per_minute for run in drains[count]),
        )
        for count in counts
    ]  # fmt: skip
    return Throughput(figures, cpu_table(rows, drains))


def main() -> None:
    def more(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--users", type=int, default=10)
        parser.add_argument("--files", type=int, default=4, help="CSVs each user uploads and analyses per run")
        parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3], help="worker counts to measure")

    arguments = benchmark_arguments(__doc__, rows=50_000, runs=3, more=more)
    result = measure(
        arguments.rows, arguments.runs, users=arguments.users, files=arguments.files, counts=tuple(arguments.workers)
    )
    title = "## Job workers: analyses per minute (one API-only launcher, standalone workers, embedded SecantusDB)"
    write_report(figures_table(title, result.figures) + "\n\n" + result.cpu_table, arguments.output)


if __name__ == "__main__":
    main()
