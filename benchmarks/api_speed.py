"""Speed of the API end to end: upload to ``analyzed`` through the real HTTP API, and status latency.

    .venv/bin/python benchmarks/api_speed.py [--rows 50000] [--runs 5] [--output FILE.md]

Starts what ``make run`` starts (the embedded SecantusDB and ``python -m app.serve``), with a model trained on
generated normal data, then for the same generated rows (20 mixed columns like the seed's) as CSV and as
.xlsx measures, per run, the wall-clock time from the start of the upload request until a status poll
(every 10 ms) reports ``analyzed``. Each run uploads the file again, so nothing is reused. Then, per run, it
polls the status as fast as one client can while analyses of the CSV run, and reports the latency percentiles.
Targets: CSV within 1.5 s, .xlsx within 3 s, status p99 under 50 ms.
"""

from __future__ import annotations

import io
import shutil
import tempfile
import time
from pathlib import Path

import httpx
from harness import (
    Figure,
    benchmark_arguments,
    embedded_database,
    figures_table,
    login,
    percentile,
    running_server,
    train_model,
    upload_to_analyzed,
    write_report,
)

from app.utils.sample_data import make_normal_transactions

# Status requests measured per run: back to back while forced re-analyses of the CSV run.
STATUS_SAMPLES = 300


def status_latencies(client: httpx.Client, headers: dict[str, str], content: bytes) -> list[float]:
    """Latencies of status requests made back to back while analyses of ``content`` run."""
    dataset_id = client.post(
        "/api/anomaly/datasets/upload", headers=headers, files={"file": ("status.csv", content)}
    ).json()["id"]
    latencies: list[float] = []
    while len(latencies) < STATUS_SAMPLES:
        client.post(
            f"/api/anomaly/datasets/{dataset_id}/analyze", headers=headers, json={"force": True}
        ).raise_for_status()
        while True:
            started = time.perf_counter()
            status = client.get(f"/api/anomaly/datasets/{dataset_id}/status", headers=headers).json()
            elapsed = time.perf_counter() - started
            if status["status"] not in ("queued", "analyzing"):
                break
            latencies.append(elapsed)
    return latencies


def measure(rows: int, runs: int, model_dir: Path | None = None) -> list[Figure]:
    """Upload to ``analyzed`` for ``rows`` rows as CSV and .xlsx, and status latency during analyses."""
    workdir = Path(tempfile.mkdtemp(prefix="api-speed-"))
    if model_dir is None:
        model_dir = train_model("api-speed-model-")
    frame = make_normal_transactions(rows, seed=7)
    files = {"csv": frame.to_csv(index=False).encode()}
    buffer = io.BytesIO()
    frame.to_excel(buffer, index=False)
    files["xlsx"] = buffer.getvalue()
    with (
        embedded_database(workdir) as database_url,
        running_server(workdir, database_url, AUTOENCODER_MODEL_PATH=str(model_dir)) as server,
        httpx.Client(base_url=server.url, timeout=120) as client,
    ):
        headers = login(client)
        upload_to_analyzed(client, headers, "warm-up.csv", files["csv"])
        totals = {
            kind: tuple(upload_to_analyzed(client, headers, f"bench.{kind}", content)["total"] for _ in range(runs))
            for kind, content in files.items()
        }
        latency_runs = [status_latencies(client, headers, files["csv"]) for _ in range(runs)]
    shutil.rmtree(workdir, ignore_errors=True)
    return [
        Figure(f"API upload to analyzed, {rows:,} x 20 CSV ({len(files['csv']) / 1e6:.1f} MB)", "s", totals["csv"],
               "≤ 1.5"),
        Figure(f"API upload to analyzed, {rows:,} x 20 XLSX ({len(files['xlsx']) / 1e6:.1f} MB)", "s",
               totals["xlsx"], "≤ 3"),
        Figure("status latency p50 during an analysis", "ms",
               tuple(1000 * percentile(latencies, 50) for latencies in latency_runs)),
        Figure("status latency p99 during an analysis", "ms",
               tuple(1000 * percentile(latencies, 99) for latencies in latency_runs), "< 50"),
    ]  # fmt: skip


def main() -> None:
    arguments = benchmark_arguments(__doc__, rows=50_000, runs=5)
    figures = measure(arguments.rows, arguments.runs)
    write_report(figures_table("## API speed (embedded SecantusDB, one uvicorn worker)", figures), arguments.output)


if __name__ == "__main__":
    main()
