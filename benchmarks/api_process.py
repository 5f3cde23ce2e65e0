"""An API process without jobs: its start time, and its memory after start and after serving requests.

    .venv/bin/python benchmarks/api_process.py [--rows 50000] [--runs 3] [--uploads 5] [--output FILE.md]

Per run, in a fresh data folder with the embedded SecantusDB already running, it starts an API-only launcher
(``python -m app.serve`` with ``JOB_WORKERS=0`` and a deployment model: one process, the API, plus its upload
parser processes) and measures the wall-clock time from starting the process until ``/health`` answers, and
until ``/ready`` answers 200 (models loaded, database reachable). It reads the API process's resident memory
(VmRSS) and peak (VmHWM) from /proc right then, and again after serving a user's requests: a registration and
a login (each an Argon2 hash of 64 MiB), ``--uploads`` CSV uploads of ``--rows`` rows x 20 columns and one
.xlsx of the same rows, the dataset list, each dataset and its status, the model list, ``/metrics``, the
OpenAPI schema and the web page. The upload parsers are separate processes; their resident memory is given
apart. It also checks that TensorFlow is not mapped into the API process (only workers load it).
Targets: at most 300 MB, started within 2 s.
"""

from __future__ import annotations

import argparse
import io
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
from harness import (
    Figure,
    Server,
    benchmark_arguments,
    descendants,
    embedded_database,
    figures_table,
    login,
    memory_mb,
    running_server,
    train_model,
    wait_for,
    write_report,
)

from app.utils.sample_data import make_normal_transactions


@dataclass(frozen=True)
class ApiRun:
    """One API process: how fast it started, its memory then and after the requests."""

    health_seconds: float
    ready_seconds: float
    resident_started: float
    resident_served: float
    peak_served: float
    parsers_resident: float
    tensorflow_loaded: bool


def tensorflow_loaded(pid: int) -> bool:
    """Whether any TensorFlow library is mapped into the process."""
    return "tensorflow" in Path(f"/proc/{pid}/maps").read_text()


def serve_requests(client: httpx.Client, files: dict[str, bytes], uploads: int) -> None:
    """What a user does without analysing: sign up, log in, upload, look at the datasets, models and docs."""
    headers = login(client)
    named = [(f"upload{index}.csv", files["csv"]) for index in range(uploads)] + [("upload.xlsx", files["xlsx"])]
    dataset_ids = [
        client.post("/api/anomaly/datasets/upload", headers=headers, files={"file": upload})
        .raise_for_status()
        .json()["id"]
        for upload in named
    ]
    client.get("/api/anomaly/datasets", headers=headers).raise_for_status()
    for dataset_id in dataset_ids:
        client.get(f"/api/anomaly/datasets/{dataset_id}", headers=headers).raise_for_status()
        client.get(f"/api/anomaly/datasets/{dataset_id}/status", headers=headers).raise_for_status()
    client.get("/api/anomaly/models", headers=headers).raise_for_status()
    for path in ("/metrics", "/ready", "/openapi.json", "/"):
        client.get(path).raise_for_status()


def measure_run(model_dir: Path, files: dict[str, bytes], uploads: int) -> ApiRun:
    """Start one API-only launcher, measure it, serve the requests, measure again."""
    workdir = Path(tempfile.mkdtemp(prefix="api-process-"))
    with (
        embedded_database(workdir) as database_url,
        running_server(workdir, database_url, AUTOENCODER_MODEL_PATH=str(model_dir), JOB_WORKERS="0") as server,
    ):
        ready_seconds = server.start_seconds + wait_for(f"{server.url}/ready", server.process, server.log_path)
        pid = server.process.pid
        resident_started = memory_mb(pid, "VmRSS")
        with httpx.Client(base_url=server.url, timeout=120) as client:
            serve_requests(client, files, uploads)
        run = ApiRun(
            server.start_seconds, ready_seconds, resident_started, memory_mb(pid, "VmRSS"), memory_mb(pid, "VmHWM"),
            parsers_resident(server), tensorflow_loaded(pid),
        )  # fmt: skip
    shutil.rmtree(workdir, ignore_errors=True)
    return run


def parsers_resident(server: Server) -> float:
    """The resident memory of the API's upload parser processes together, in MB."""
    return sum(memory_mb(pid, "VmRSS") for pid in descendants(server.process.pid))


def measure(rows: int, runs: int, model_dir: Path | None = None, uploads: int = 5) -> tuple[list[Figure], str]:
    """The figures of ``runs`` API processes, and a line on whether any of them loaded TensorFlow."""
    if model_dir is None:
        model_dir = train_model("api-process-model-")
    frame = make_normal_transactions(rows, seed=31)
    buffer = io.BytesIO()
    frame.to_excel(buffer, index=False)
    files = {"csv": frame.to_csv(index=False).encode(), "xlsx": buffer.getvalue()}
    measured = [measure_run(model_dir, files, uploads) for _ in range(runs)]
    served = f"after {uploads} CSV and 1 XLSX uploads of {rows:,} rows and a login"
    figures = [
        Figure("API-only process start to /health answering", "s", tuple(run.health_seconds for run in measured),
               "≤ 2"),
        Figure("API-only process start to /ready answering 200", "s", tuple(run.ready_seconds for run in measured)),
        Figure("API process resident memory (VmRSS) after start", "MB",
               tuple(run.resident_started for run in measured), "≤ 300"),
        Figure(f"API process resident memory (VmRSS) {served}", "MB",
               tuple(run.resident_served for run in measured), "≤ 300"),
        Figure(f"API process peak memory (VmHWM) {served}", "MB", tuple(run.peak_served for run in measured),
               "≤ 300"),
        Figure("its upload parser processes, resident together, after the same", "MB",
               tuple(run.parsers_resident for run in measured)),
    ]  # fmt: skip
    loaded = sum(run.tensorflow_loaded for run in measured)
    note = f"TensorFlow mapped into the API process: {'in ' + str(loaded) if loaded else 'in none'} of {runs} runs."
    return figures, note


def main() -> None:
    def more(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--uploads", type=int, default=5, help="CSV uploads served before the second reading")

    arguments = benchmark_arguments(__doc__, rows=50_000, runs=3, more=more)
    figures, note = measure(arguments.rows, arguments.runs, uploads=arguments.uploads)
    title = "## The API process without jobs (JOB_WORKERS=0, embedded SecantusDB already running)"
    write_report(figures_table(title, figures) + "\n\n" + note, arguments.output)


if __name__ == "__main__":
    main()
