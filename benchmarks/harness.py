"""What every benchmark script shares: the machine's description, timing summaries, a real server to measure.

The server is what ``make run`` starts (the embedded SecantusDB and ``python -m app.serve``), in a throw-away
data folder, so a benchmark measures the product as users run it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
BACKEND_DIR = Path(__file__).resolve().parents[1] / "backend"
sys.path.insert(0, str(BACKEND_DIR))

from app.db.embedded import EmbeddedDatabase  # noqa: E402
from app.utils.sample_data import make_normal_transactions  # noqa: E402

POLL_SECONDS = 0.01


def cpu_model() -> str:
    """The processor's name, from /proc/cpuinfo."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def machine() -> str:
    """One line naming the machine the figures come from."""
    return (
        f"{platform.machine()}, {os.cpu_count()} cores ({cpu_model()}), Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}"
    )


def timed(action: Callable[[], object], runs: int) -> list[float]:
    """Wall-clock seconds of ``runs`` calls of ``action``."""
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - started)
    return seconds


@dataclass(frozen=True)
class Summary:
    """The median of several measurements, with their range."""

    median: float
    low: float
    high: float
    runs: int

    @classmethod
    def of(cls, values: list[float]) -> Summary:
        return cls(statistics.median(values), min(values), max(values), len(values))


def percentile(values: list[float], share: float) -> float:
    """The ``share``-th percentile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share / 100 * (len(ordered) - 1)))]


def free_port() -> int:
    """A TCP port free on the loopback interface."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    """A running ``python -m app.serve`` process."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path


def start_server(env: dict[str, str], log_path: Path) -> Server:
    """Start the API with ``env`` added to the environment; return once ``/health`` answers."""
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
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return Server(process, url, log_path)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the server did not start; see {log_path}")


@contextlib.contextmanager
def embedded_database(workdir: Path) -> Iterator[str]:
    """An embedded SecantusDB in ``workdir``; yields its connection string."""
    with EmbeddedDatabase(workdir / "db", workdir / "secantusd.log") as database:
        yield database.url


@contextlib.contextmanager
def running_server(workdir: Path, database_url: str, **env: str) -> Iterator[Server]:
    """A production-mode server on ``database_url`` with ``env`` (e.g. ``AUTOENCODER_MODEL_PATH``)."""
    server = start_server(
        {
            "MONGODB_URL": database_url,
            "JWT_SECRET": secrets.token_urlsafe(32),
            "ENVIRONMENT": "production",
            "DATA_DIR": str(workdir),
            **env,
        },
        workdir / f"server-{secrets.token_hex(3)}.log",
    )
    try:
        yield server
    finally:
        server.process.terminate()
        server.process.wait(60)


def login(client: httpx.Client) -> dict[str, str]:
    """Register a fresh user and return the bearer header for it."""
    credentials = {"username": f"bench-{secrets.token_hex(4)}", "password": "benchmark-password"}
    client.post("/api/auth/register", json=credentials).raise_for_status()
    token = client.post("/api/auth/token", data=credentials).raise_for_status().json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def upload_to_analyzed(
    client: httpx.Client,
    headers: dict[str, str],
    filename: str,
    content: bytes | BinaryIO,
    poll_seconds: float = POLL_SECONDS,
) -> dict:
    """Upload (bytes, or a file streamed up), analyze, poll until analysed; return the client's and server's timings."""
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
        time.sleep(poll_seconds)
    finished = time.perf_counter()
    if status["status"] != "analyzed":
        raise SystemExit(f"analysis failed: {status['error']}")
    return {
        "dataset_id": dataset_id,
        "total": finished - started,
        "upload": uploaded - started,
        "analysis": finished - uploaded,
        "server": status["timings"],
        "anomalies": status["anomaly_count"],
    }


@dataclass(frozen=True)
class Figure:
    """One benchmark figure: several runs of one measure, summarised as median (min-max)."""

    name: str
    unit: str
    values: tuple[float, ...]
    target: str = ""

    @property
    def summary(self) -> Summary:
        return Summary.of(list(self.values))

    def cells(self) -> str:
        """``| name | median | min | max | runs | target |`` for a Markdown table."""
        whole, tenths = ("rows/s", "count"), ("ms", "MB", "×")
        fmt = "{:,.0f}" if self.unit in whole else "{:,.1f}" if self.unit in tenths else "{:.3f}"
        low, high = (self.summary.low, self.summary.high)
        return (
            f"| {self.name} ({self.unit}) | **{fmt.format(self.summary.median)}** | {fmt.format(low)} "
            f"| {fmt.format(high)} | {self.summary.runs} | {self.target} |"
        )


def figures_table(title: str, figures: list[Figure]) -> str:
    """A Markdown table of ``figures`` under ``title`` and the machine line."""
    return "\n".join(
        [
            title,
            "",
            f"Machine: {machine()}.",
            "",
            "| measure | median | min | max | runs | target |",
            "|---|---|---|---|---|---|",
            *(figure.cells() for figure in figures),
        ]
    )


def write_report(report: str, output: Path | None) -> None:
    """Print ``report`` and, with ``output``, write it there too."""
    print(report)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(report + "\n", encoding="utf-8")


def train_model(prefix: str) -> Path:
    """The model every speed benchmark scores with: trained on 10,000 generated normal rows, in a temp folder."""
    from app.utils.anomaly_detector import TabularAnomalyDetector

    directory = Path(tempfile.mkdtemp(prefix=prefix)) / "AutoEncoder"
    detector = TabularAnomalyDetector(encoding_dim=8, threshold_percentile=95, random_state=0)
    detector.train(make_normal_transactions(10_000, seed=0), epochs=10, verbose=0)
    detector.save(directory, training_report=False)
    return directory


def benchmark_arguments(
    description: str | None, rows: int, runs: int, more: Callable[[argparse.ArgumentParser], None] | None = None
) -> argparse.Namespace:
    """The options every benchmark script takes (``--rows``, ``--runs``, ``--output``), plus ``more``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=rows)
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--output", type=Path, help="also write the Markdown table to this file")
    if more is not None:
        more(parser)
    return parser.parse_args()
