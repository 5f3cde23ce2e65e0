"""Users' own trainings: the API beside the training CLI, the first analysis with the new model in another
worker, status latency during a training, and a worker's peak memory training a million-row dataset.

    .venv/bin/python benchmarks/training_speed.py [--rows 50000] [--runs 3] [--epochs 50] [--seed 0]
        [--big-rows 1000000] [--big-epochs 10] [--output FILE.md]

Starts the embedded SecantusDB and one API-only launcher (``JOB_WORKERS=0``, a deployment model, upload and
storage limits raised for the big file) in a fresh data folder; the job workers are standalone ``python -m
app.worker`` processes, each warmed up (TensorFlow imported, the deployment model loaded) before it is used.

1. Per run, on the same CSV of ``--rows`` rows x 20 mixed columns (``make_normal_transactions``): the CLI,
   ``python train_autoencoder_model.py FILE --output-dir DIR --epochs E --seed S`` (wall clock with process
   start), then a training through the API with the same epochs and seed, from ``POST /api/anomaly/models``
   until ``GET /api/anomaly/trainings/{id}`` says ``trained`` (polled every 50 ms). Target: the API within
   1.5 x the CLI.
2. Per run, a worker started after those trainings, which never loaded the model: its first analysis of the
   file with the new model (``{"model": ..., "force": true}``, from the request until the status says
   ``analyzed``, polled every 10 ms), then the same analysis again, warm. Target: at most 2 s over the warm one.
   The two are compared without the time each waited in the queue (the server's ``queued_seconds``), which
   varies from run to run by up to the workers' poll interval and is reported on its own.
3. Per run, another user polls the status of an analysed dataset back to back while the first user's training
   runs (only requests made while it runs count). Target: p99 at most 50 ms.
4. Per run, a fresh worker trains a model from a ``--big-rows`` dataset (a ``TRAINING_MAX_ROWS`` sample of it,
   200,000 rows by default) for ``--big-epochs`` epochs; its peak resident memory is its VmHWM afterwards.
   Target: under 2 GB.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from harness import (
    BACKEND_DIR,
    Figure,
    Server,
    benchmark_arguments,
    embedded_database,
    figures_table,
    login,
    memory_mb,
    percentile,
    running_server,
    running_workers,
    train_model,
    upload_to_analyzed,
    write_report,
)

from app.utils.sample_data import make_normal_transactions

TRAINING_POLL_SECONDS = 0.05
ANALYSIS_POLL_SECONDS = 0.01
TRAINING_TIMEOUT_SECONDS = 1800
MODEL_NAME = "bench-model"
ENDED = ("trained", "failed", "cancelled")


@dataclass(frozen=True)
class Training:
    """One training, as its client saw it."""

    seconds: float
    epochs_run: int
    rows_used: int


@dataclass(frozen=True)
class Workload:
    """What every part of this benchmark trains and analyses with."""

    rows: int
    runs: int
    epochs: int = 50
    seed: int = 0
    big_rows: int = 1_000_000
    big_epochs: int = 10


def upload_file(client: httpx.Client, headers: dict[str, str], path: Path) -> str:
    """Stream ``path`` up; the new dataset's id."""
    with open(path, "rb") as handle:
        answer = client.post("/api/anomaly/datasets/upload", headers=headers, files={"file": (path.name, handle)})
    dataset_id: str = answer.raise_for_status().json()["id"]
    return dataset_id


def request_training(
    client: httpx.Client, headers: dict[str, str], dataset_id: str, *, name: str, epochs: int, seed: int
) -> str:
    """Ask for a training of ``name`` from the dataset; the training's id."""
    answer = client.post(
        "/api/anomaly/models",
        headers=headers,
        json={"dataset_id": dataset_id, "name": name, "epochs": epochs, "seed": seed},
    )
    training_id: str = answer.raise_for_status().json()["training_id"]
    return training_id


def train_through_api(
    client: httpx.Client, headers: dict[str, str], dataset_id: str, *, name: str, epochs: int, seed: int
) -> Training:
    """Request a training and poll it until it ends; ``SystemExit`` unless it ends ``trained``."""
    started = time.perf_counter()
    training_id = request_training(client, headers, dataset_id, name=name, epochs=epochs, seed=seed)
    deadline = time.monotonic() + TRAINING_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        training = client.get(f"/api/anomaly/trainings/{training_id}", headers=headers).raise_for_status().json()
        if training["status"] in ENDED:
            break
        time.sleep(TRAINING_POLL_SECONDS)
    seconds = time.perf_counter() - started
    if training["status"] != "trained":
        raise SystemExit(f"the training ended {training['status']}: {training['error']}")
    return Training(seconds, training["result"]["epochs_run"], training["result"]["rows_used"])


def train_with_cli(csv_path: Path, output_dir: Path, *, epochs: int, seed: int) -> Training:
    """The training CLI on ``csv_path``, timed from process start to exit."""
    command = [
        sys.executable, "train_autoencoder_model.py", str(csv_path), "--output-dir", str(output_dir),
        "--epochs", str(epochs), "--seed", str(seed),
    ]  # fmt: skip
    started = time.perf_counter()
    finished = subprocess.run(command, cwd=BACKEND_DIR, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        raise SystemExit(f"the training CLI failed ({finished.returncode}): {finished.stderr[-2000:]}")
    early = re.search(r"early stopping after (\d+) epochs", finished.stdout)
    loaded = re.search(r"Loaded ([\d,]+) rows", finished.stdout)
    rows_used = int(loaded.group(1).replace(",", "")) if loaded else 0
    return Training(seconds, int(early.group(1)) if early else epochs, rows_used)


def analyze_to_analyzed(
    client: httpx.Client, headers: dict[str, str], dataset_id: str, model: str
) -> tuple[float, float]:
    """Seconds from a forced analysis request with ``model`` until the status says ``analyzed``, and the seconds
    of it the analysis waited in the queue (the server's ``queued_seconds``)."""
    started = time.perf_counter()
    client.post(
        f"/api/anomaly/datasets/{dataset_id}/analyze", headers=headers, json={"model": model, "force": True}
    ).raise_for_status()
    while True:
        status = client.get(f"/api/anomaly/datasets/{dataset_id}/status", headers=headers).json()
        if status["status"] in ("analyzed", "failed"):
            break
        time.sleep(ANALYSIS_POLL_SECONDS)
    if status["status"] != "analyzed":
        raise SystemExit(f"the analysis failed: {status['error']}")
    return time.perf_counter() - started, status["timings"]["queued_seconds"]


def status_latencies_during_training(
    client: httpx.Client, trainer: dict[str, str], dataset_id: str, workload: Workload, run: int
) -> list[float]:
    """Another user's status requests, back to back, while ``trainer``'s training of ``dataset_id`` runs."""
    watcher = login(client)
    content = make_normal_transactions(1_000, seed=5).to_csv(index=False).encode()
    watched = upload_to_analyzed(client, watcher, "watched.csv", content)["dataset_id"]
    training_id = request_training(
        client, trainer, dataset_id, name=f"{MODEL_NAME}-during-{run}", epochs=workload.epochs, seed=workload.seed
    )
    state = {"status": "queued"}
    ended = threading.Event()

    def watch_training() -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=60) as own:
            while state["status"] not in ENDED:
                state["status"] = own.get(f"/api/anomaly/trainings/{training_id}", headers=trainer).json()["status"]
                time.sleep(TRAINING_POLL_SECONDS)
        ended.set()

    threading.Thread(target=watch_training, name="training-watcher", daemon=True).start()
    latencies = []
    while not ended.is_set():
        running = state["status"] == "running"
        started = time.perf_counter()
        client.get(f"/api/anomaly/datasets/{watched}/status", headers=watcher).raise_for_status()
        elapsed = time.perf_counter() - started
        if running and state["status"] == "running":
            latencies.append(elapsed)
    if state["status"] != "trained":
        raise SystemExit(f"the training during the status requests ended {state['status']}")
    return latencies


def cli_against_api(
    client: httpx.Client, headers: dict[str, str], dataset_id: str, csv_path: Path, workload: Workload
) -> tuple[list[Training], list[Training]]:
    """Per run: the CLI, then the API, on the same file with the same epochs and seed."""
    cli, api = [], []
    for _ in range(workload.runs):
        output_dir = Path(tempfile.mkdtemp(prefix="training-speed-cli-")) / "AutoEncoder"
        cli.append(train_with_cli(csv_path, output_dir, epochs=workload.epochs, seed=workload.seed))
        shutil.rmtree(output_dir.parent, ignore_errors=True)
        api.append(
            train_through_api(client, headers, dataset_id, name=MODEL_NAME, epochs=workload.epochs, seed=workload.seed)
        )
    return cli, api


def first_and_warm_analyses(
    client: httpx.Client, server: Server, headers: dict[str, str], dataset_id: str, runs: int
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Per run, a worker that never loaded the user's model: its first analysis with it, then a warm one."""
    first, warm = [], []
    for _ in range(runs):
        with running_workers(server, 1):
            first.append(analyze_to_analyzed(client, headers, dataset_id, MODEL_NAME))
            warm.append(analyze_to_analyzed(client, headers, dataset_id, MODEL_NAME))
    return first, warm


def big_training_memory(
    client: httpx.Client, server: Server, headers: dict[str, str], big_path: Path, workload: Workload
) -> tuple[list[float], list[float], list[Training]]:
    """Per run, a fresh worker trains from the big dataset: its resident memory before, its peak after."""
    dataset_id = upload_file(client, headers, big_path)
    before, peak, trainings = [], [], []
    for run in range(workload.runs):
        with running_workers(server, 1) as (worker,):
            before.append(memory_mb(worker.pid, "VmRSS"))
            training = train_through_api(
                client, headers, dataset_id, name=f"{MODEL_NAME}-big-{run}", epochs=workload.big_epochs,
                seed=workload.seed,
            )  # fmt: skip
            trainings.append(training)
            peak.append(memory_mb(worker.pid, "VmHWM"))
    return before, peak, trainings


def epochs_run(trainings: list[Training]) -> str:
    """The epochs the runs ran (early stopping may end a training before its maximum)."""
    return "/".join(str(training.epochs_run) for training in trainings)


def measure(workload: Workload, model_dir: Path | None = None) -> list[Figure]:
    """Every figure of this benchmark, on one database and one API process."""
    workdir = Path(tempfile.mkdtemp(prefix="training-speed-"))
    if model_dir is None:
        model_dir = train_model("training-speed-model-")
    csv_path = workdir / f"train_{workload.rows}.csv"
    make_normal_transactions(workload.rows, seed=21).to_csv(csv_path, index=False)
    big_path = workdir / f"train_{workload.big_rows}.csv"
    make_normal_transactions(workload.big_rows, seed=22).to_csv(big_path, index=False)
    big_mb = big_path.stat().st_size / 2**20
    limits = {"MAX_UPLOAD_MB": str(int(big_mb) + 64), "MAX_STORAGE_MB_PER_USER": str(int(4 * big_mb) + 2000)}
    with (
        embedded_database(workdir) as database_url,
        running_server(
            workdir, database_url, AUTOENCODER_MODEL_PATH=str(model_dir), JOB_WORKERS="0", **limits
        ) as server,
        httpx.Client(base_url=server.url, timeout=600) as client,
    ):
        headers = login(client)
        dataset_id = upload_file(client, headers, csv_path)
        with running_workers(server, 1):
            cli, api = cli_against_api(client, headers, dataset_id, csv_path, workload)
            latencies = [
                status_latencies_during_training(client, headers, dataset_id, workload, run)
                for run in range(workload.runs)
            ]
        first, warm = first_and_warm_analyses(client, server, headers, dataset_id, workload.runs)
        before, peak, big = big_training_memory(client, server, headers, big_path, workload)
    shutil.rmtree(workdir, ignore_errors=True)
    shape = f"{workload.rows:,} x 20"
    same = f"max {workload.epochs} epochs, seed {workload.seed}"
    sampled = "/".join(f"{training.rows_used:,}" for training in big)
    return [
        Figure(f"training CLI, {shape} CSV, {same}, with process start (epochs run {epochs_run(cli)})", "s",
               tuple(training.seconds for training in cli)),
        Figure(f"user's training via API, request to trained, same file and parameters (epochs run "
               f"{epochs_run(api)})", "s", tuple(training.seconds for training in api)),
        Figure("user's training via API over the CLI", "×",
               tuple(ours.seconds / theirs.seconds for ours, theirs in zip(api, cli, strict=True)), "≤ 1.5"),
        Figure("first analysis with the user's model in a worker that never loaded it, request to analyzed", "s",
               tuple(seconds for seconds, _ in first)),
        Figure("the same analysis again, warm", "s", tuple(seconds for seconds, _ in warm)),
        Figure("of the warm one: waiting in the queue for the idle worker (server's queued_seconds)", "s",
               tuple(queued for _, queued in warm)),
        Figure("first analysis over the warm one, each without its wait in the queue", "s",
               tuple((cold - cold_queued) - (hot - hot_queued)
                     for (cold, cold_queued), (hot, hot_queued) in zip(first, warm, strict=True)), "≤ 2"),
        Figure("status latency p50 during another user's training", "ms",
               tuple(1000 * percentile(run, 50) for run in latencies)),
        Figure("status latency p99 during another user's training", "ms",
               tuple(1000 * percentile(run, 99) for run in latencies), "≤ 50"),
        Figure("worker resident memory, warm and idle, before the big training", "MB", tuple(before)),
        Figure(f"worker peak memory training from {workload.big_rows:,} rows ({sampled} sampled, "
               f"{workload.big_epochs} epochs max)", "MB", tuple(peak), "< 2,048"),
        Figure(f"that training, request to trained (epochs run {epochs_run(big)})", "s",
               tuple(training.seconds for training in big)),
    ]  # fmt: skip


def main() -> None:
    def more(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--epochs", type=int, default=50, help="maximum epochs of the CLI and API trainings")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--big-rows", type=int, default=1_000_000)
        parser.add_argument("--big-epochs", type=int, default=10)

    arguments = benchmark_arguments(__doc__, rows=50_000, runs=3, more=more)
    workload = Workload(
        arguments.rows, arguments.runs, arguments.epochs, arguments.seed, arguments.big_rows, arguments.big_epochs
    )
    title = "## Users' trainings (one API-only launcher, standalone workers, embedded SecantusDB)"
    write_report(figures_table(title, measure(workload)), arguments.output)


if __name__ == "__main__":
    main()
