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
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
BACKEND_DIR = Path(__file__).resolve().parents[1] / "backend"
sys.path.insert(0, str(BACKEND_DIR))

from app.db.embedded import EmbeddedDatabase  # noqa: E402
from app.utils.sample_data import make_normal_transactions  # noqa: E402

POLL_SECONDS = 0.01
STATUS_SAMPLES = 1000


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def train_model(directory: Path) -> None:
    from app.utils.anomaly_detector import TabularAnomalyDetector

    detector = TabularAnomalyDetector(encoding_dim=8, threshold_percentile=95, random_state=0)
    detector.train(make_normal_transactions(10_000, seed=0), epochs=10, verbose=0)
    detector.save(directory, training_report=False)


def start_server(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.serve", "--port", str(port)],
            cwd=BACKEND_DIR, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited; see {log_path}")
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the server did not become ready; see {log_path}")


def login(client: httpx.Client) -> dict[str, str]:
    credentials = {"username": f"bench-{secrets.token_hex(4)}", "password": "benchmark-password"}
    client.post("/api/auth/register", json=credentials).raise_for_status()
    token = client.post("/api/auth/token", data=credentials).raise_for_status().json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def upload_to_analyzed(client: httpx.Client, headers: dict[str, str], filename: str, content: bytes) -> dict:
    """Upload, analyze, poll until analysed; return the timings seen by the client and the server."""
    started = time.perf_counter()
    answer = client.post("/api/anomaly/datasets/upload", headers=headers, files={"file": (filename, content)})
    answer.raise_for_status()
    uploaded = time.perf_counter()
    dataset_id = answer.json()["id"]
    client.post(f"/api/anomaly/datasets/{dataset_id}/analyze", headers=headers).raise_for_status()
    while True:
        status = client.get(f"/api/anomaly/datasets/{dataset_id}/status", headers=headers).json()
        if status["status"] in ("analyzed", "failed"):
            break
        time.sleep(POLL_SECONDS)
    finished = time.perf_counter()
    if status["status"] != "analyzed":
        raise SystemExit(f"analysis failed: {status['error']}")
    return {
        "total": finished - started,
        "upload": uploaded - started,
        "analysis": finished - uploaded,
        "server": status["timings"],
        "anomalies": status["anomaly_count"],
    }


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


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share / 100 * (len(ordered) - 1)))]


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

    with EmbeddedDatabase(workdir / "db", workdir / "secantusd.log") as database:
        env = {
            "MONGODB_URL": database.url,
            "JWT_SECRET": secrets.token_urlsafe(32),
            "ENVIRONMENT": "production",
            "AUTOENCODER_MODEL_PATH": str(workdir / "models" / "AutoEncoder"),
            "DATA_DIR": str(workdir),
        }
        server, url = start_server(env, workdir / "server.log")
        try:
            with httpx.Client(base_url=url, timeout=120) as client:
                headers = login(client)
                upload_to_analyzed(client, headers, "warm-up.csv", files["csv"])
                results = {
                    kind: [upload_to_analyzed(client, headers, f"bench.{kind}", content) for _ in range(arguments.runs)]
                    for kind, content in files.items()
                }
                latencies = status_latencies(client, headers, files["csv"])
        finally:
            server.terminate()
            server.wait(60)
    shutil.rmtree(workdir, ignore_errors=True)

    lines = [
        f"## API speed: upload to `analyzed`, {arguments.rows:,} rows x {frame.shape[1]} columns",
        "",
        f"Machine: {os.cpu_count()} CPUs (nproc), {cpu_model()}; Python {platform.python_version()}; "
        "embedded SecantusDB with --sync-on-commit; one uvicorn worker.",
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
