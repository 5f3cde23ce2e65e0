"""Speed of the API end to end: upload to ``analyzed`` through the real HTTP API, and status latency.

    .venv/bin/python benchmarks/api_speed.py [--rows 50000] [--runs 5] [--output FILE.md]

Starts what ``make run`` starts (the embedded SecantusDB and ``python -m app.serve``), with a model trained on
generated normal data, then for the same generated rows (20 mixed columns like the seed's) as CSV and as
.xlsx measures, per run, the wall-clock time from the start of the upload request until a status poll
(every 10 ms) reports ``analyzed``. Each run uploads the file again, so nothing is reused. Then it polls the
status as fast as one client can while analyses of the CSV run, and reports the latency percentiles.
Targets: CSV within 1.5 s, .xlsx within 3 s, status p99 under 50 ms.
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from harness import (
    embedded_database,
    login,
    machine,
    percentile,
    running_server,
    upload_to_analyzed,
)

from app.utils.sample_data import make_normal_transactions

STATUS_SAMPLES = 1000


def train_model(directory: Path) -> None:
    from app.utils.anomaly_detector import TabularAnomalyDetector

    detector = TabularAnomalyDetector(encoding_dim=8, threshold_percentile=95, random_state=0)
    detector.train(make_normal_transactions(10_000, seed=0), epochs=10, verbose=0)
    detector.save(directory, training_report=False)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--output", type=Path)
    arguments = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="api-speed-"))
    print(f"Training a model and writing the files in {workdir} (removed at the end) ...", flush=True)
    train_model(workdir / "models" / "AutoEncoder")
    frame = make_normal_transactions(arguments.rows, seed=7)
    files = {"csv": frame.to_csv(index=False).encode()}
    buffer = io.BytesIO()
    frame.to_excel(buffer, index=False)
    files["xlsx"] = buffer.getvalue()

    with (
        embedded_database(workdir) as database_url,
        running_server(workdir, database_url, AUTOENCODER_MODEL_PATH=str(workdir / "models" / "AutoEncoder")) as server,
        httpx.Client(base_url=server.url, timeout=120) as client,
    ):
        headers = login(client)
        upload_to_analyzed(client, headers, "warm-up.csv", files["csv"])
        results = {
            kind: [upload_to_analyzed(client, headers, f"bench.{kind}", content) for _ in range(arguments.runs)]
            for kind, content in files.items()
        }
        latencies = status_latencies(client, headers, files["csv"])
    shutil.rmtree(workdir, ignore_errors=True)

    lines = [
        f"## API speed: upload to `analyzed`, {arguments.rows:,} rows x {frame.shape[1]} columns",
        "",
        f"Machine: {machine()}; embedded SecantusDB with --sync-on-commit; one uvicorn worker.",
        f"Command: `.venv/bin/python benchmarks/api_speed.py --rows {arguments.rows} --runs {arguments.runs}`",
        "",
        "| file | size | upload→analyzed median (min-max) | upload | analyze→analyzed | server: load / score / store "
        "| target |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    targets = {"csv": 1.5, "xlsx": 3.0}
    for kind, runs in results.items():
        total = [run["total"] for run in runs]
        server_parts = [
            statistics.median(run["server"].get(part, 0.0) for run in runs)
            for part in ("load_seconds", "score_seconds", "store_seconds")
        ]
        lines.append(
            f"| .{kind} | {len(files[kind]) / 1e6:.1f} MB | **{statistics.median(total):.2f} s** "
            f"({min(total):.2f}-{max(total):.2f}) | {statistics.median(run['upload'] for run in runs):.2f} s "
            f"| {statistics.median(run['analysis'] for run in runs):.2f} s "
            f"| {' / '.join(f'{part:.2f}' for part in server_parts)} s | ≤ {targets[kind]} s |"
        )
    lines += [
        "",
        f"Status while analyses of the .csv run ({len(latencies)} requests back to back): "
        f"p50 **{percentile(latencies, 50) * 1000:.1f} ms**, p99 **{percentile(latencies, 99) * 1000:.1f} ms**, "
        f"max {max(latencies) * 1000:.1f} ms (target: p99 < 50 ms).",
    ]
    report = "\n".join(lines)
    print(report)
    if arguments.output:
        arguments.output.write_text(report + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
