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
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import httpx

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
BACKEND_DIR = Path(__file__).resolve().parents[1] / "backend"
sys.path.insert(0, str(BACKEND_DIR))

from app.db.embedded import EmbeddedDatabase  # noqa: E402
from app.utils.sample_data import make_normal_transactions  # noqa: E402
from tests.api.process_tree import command_line, descendants  # noqa: E402

POLL_SECONDS = 0.01
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


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
    """A running ``python -m app.serve`` process, and the environment it was given (which workers share)."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    # Seconds from starting the process until /health answered.
    start_seconds: float = 0.0


def wait_for(url: str, process: subprocess.Popen[bytes], log_path: Path, timeout: float = 120) -> float:
    """Wait until ``url`` answers 200 (``SystemExit`` naming the log if the process exits or takes too long);
    return the seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise SystemExit(f"the server exited; see {log_path}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.01)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s; see {log_path}")


def start_server(env: dict[str, str], log_path: Path) -> Server:
    """Start the API with ``env`` added to the environment; return once ``/health`` answers."""
    port = free_port()
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.serve", "--port", str(port)],
            cwd=BACKEND_DIR, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_for(f"{url}/health", process, log_path)
    return Server(process, url, log_path, env, time.perf_counter() - started)


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


def start_worker(server: Server, log_path: Path) -> subprocess.Popen[bytes]:
    """Start a standalone ``python -m app.worker`` on ``server``'s database (as on a worker-only host)."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "app.worker"],
            cwd=BACKEND_DIR, env={**os.environ, **server.env}, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


def wait_until_idle(process: subprocess.Popen[bytes], log_path: Path, timeout: float = 180) -> None:
    """Wait until a worker has started (its log says so) and then used almost no CPU for a second: its
    warm-up (TensorFlow imported, the deployment's models loaded) is over, so it measures as a warm worker."""
    deadline = time.monotonic() + timeout
    while "Job worker" not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the worker did not start; see {log_path}")
        time.sleep(0.1)
    before = cpu_seconds(process.pid)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = cpu_seconds(process.pid)
        if before is None or now is None:
            raise SystemExit(f"the worker exited; see {log_path}")
        if now - before < 0.05:
            return
        before = now
    raise SystemExit(f"the worker stayed busy for {timeout:.0f} s; see {log_path}")


def stop_processes(processes: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    """SIGTERM to each at once (a worker puts its job back in the queue), then SIGKILL to any still running
    after ``timeout``."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running_workers(server: Server, count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` standalone workers on ``server``'s database, each warmed up before they are yielded."""
    logs = [server.log_path.with_name(f"worker-{secrets.token_hex(3)}.log") for _ in range(count)]
    workers = [start_worker(server, log) for log in logs]
    try:
        for worker, log in zip(workers, logs, strict=True):
            wait_until_idle(worker, log)
        yield workers
    finally:
        stop_processes(workers)


def memory_mb(pid: int, field: str = "VmHWM") -> float:
    """A memory figure of a running process from /proc/<pid>/status (``VmHWM`` its peak resident set so far,
    ``VmRSS`` its resident set now), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def reset_peak_memory(pid: int) -> None:
    """Set the process's VmHWM to its current resident set (Linux's clear_refs), to measure a peak from now."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user and system, all its threads) a process has used so far; ``None`` once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command's closing parenthesis: state is field 0, utime field 11, stime field 12.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def embedded_database_pid() -> int:
    """The SecantusDB process this benchmark started (``embedded_database``)."""
    for pid in descendants(os.getpid()):
        if "-m secantus" in command_line(pid):
            return pid
    raise RuntimeError("no embedded database process among this benchmark's children")


def with_descendants(pid: int) -> Callable[[], list[int]]:
    """A process group for ``CpuMeter``: the process and whatever it has started (an API's upload parsers)."""
    return lambda: [pid, *descendants(pid)]


def machine_cpu_seconds() -> tuple[float, float]:
    """CPU seconds the whole machine has been busy and idle so far, over all cores (/proc/stat)."""
    user, nice, system, idle, iowait, irq, softirq, steal = (
        int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS, (idle + iowait) / CLOCK_TICKS


class CpuMeter:
    """The cores each group of processes kept busy during a measurement, and the rest of the machine's.

    Each group is a function naming its processes at the moment (``with_descendants``: children come and go);
    /proc/<pid>/stat is sampled in a thread, so a process that ends during the measurement still counts up to
    its last sample. Use as a context manager around the measured part.
    """

    def __init__(self, groups: dict[str, Callable[[], Iterable[int]]], interval: float = 0.2) -> None:
        self.groups = groups
        self.interval = interval
        self._first: dict[tuple[str, int], float] = {}
        self._last: dict[tuple[str, int], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, name="cpu-meter", daemon=True)
        self._started = self._ended = 0.0
        self._machine_start = self._machine_end = (0.0, 0.0)

    def __enter__(self) -> CpuMeter:
        self._sample(first=True)
        self._machine_start = machine_cpu_seconds()
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self._machine_end = machine_cpu_seconds()
        self._ended = time.perf_counter()

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self, first: bool = False) -> None:
        for name, members in self.groups.items():
            for pid in members():
                seconds = cpu_seconds(pid)
                if seconds is None:
                    continue
                # A process first seen after the start was started during the measurement: all its time counts.
                self._first.setdefault((name, pid), seconds if first else 0.0)
                self._last[(name, pid)] = seconds

    def cores(self) -> dict[str, float]:
        """Cores used on average by each group, by ``other`` processes (the rest of the machine) and ``idle``."""
        wall = self._ended - self._started
        used = {name: 0.0 for name in self.groups}
        for (name, pid), last in self._last.items():
            used[name] += (last - self._first[(name, pid)]) / wall
        busy = (self._machine_end[0] - self._machine_start[0]) / wall
        idle = (self._machine_end[1] - self._machine_start[1]) / wall
        return {**used, "other": max(0.0, busy - sum(used.values())), "idle": idle}


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
        whole, tenths = ("rows/s", "count"), ("ms", "MB", "×", "analyses/min", "%")
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
