"""Load: many users at once, and memory over many analyses, through the real HTTP API on loopback.

    .venv/bin/python benchmarks/load.py [--users 20] [--rows 10000] [--rounds 3] [--pollers 5]
                                        [--sequential 200] [--output benchmarks/results/load.md]

Starts what ``make run`` starts (the embedded SecantusDB and ``python -m app.serve``, one worker) with a model
trained on generated normal data, then:

1. **Concurrent users**, ``--rounds`` times: ``--users`` users at once each upload their own ``--rows``-row CSV,
   analyse it and poll its status until it is analysed, while ``--pollers`` other users poll the status of
   their own analysed dataset back to back. Every answer must be a success, and every result correct: the row
   count, the anomaly count and each row's score in the results file are compared with the same model run
   in this process. Reported: the time until all users had their results, each user's upload-to-result time,
   and the status latency percentiles seen by the pollers.
2. **Memory**: ``--sequential`` analyses one after another (upload, analyse, check, delete), with the API
   process's resident memory (RSS) read from /proc after the first and after each later one.

Exits with status 1 if any request failed or any result was wrong. Requests go to 127.0.0.1 only, are
bounded in number, and the script stops by itself.
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from harness import (
    embedded_database,
    login,
    machine,
    memory_mb,
    percentile,
    running_server,
    train_model,
    write_report,
)

from app.utils.sample_data import inject_anomalies, make_normal_transactions

POLL_SECONDS = 0.2
TIMEOUT_SECONDS = 600
# How often a request answered 429 is asked again (after its Retry-After) before it counts as failed.
RETRIES_AFTER_429 = 5


@dataclass
class Tally:
    """What the run saw: failed requests, wrong results and status latencies (thread-safe appends)."""

    errors: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    status_seconds: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def error(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)

    def latency(self, seconds: float) -> None:
        with self.lock:
            self.status_seconds.append(seconds)


class Checker:
    """Expected results, from the same model scoring the same rows in this process."""

    def __init__(self, model_dir: Path) -> None:
        from app.utils.anomaly_detector import TabularAnomalyDetector

        self.detector = TabularAnomalyDetector.load(model_dir)
        self.lock = threading.Lock()  # one TensorFlow call at a time from the load threads

    def problems(self, frame: pd.DataFrame, status: dict, results_csv: bytes) -> list[str]:
        with self.lock:
            expected = self.detector.decision_function(frame)
        threshold = status["threshold"]
        results = pd.read_csv(io.BytesIO(results_csv))
        found = []
        if status["row_count"] != len(frame) or len(results) != len(frame):
            found.append(f"rows: status {status['row_count']}, results {len(results)}, uploaded {len(frame)}")
        if status["anomaly_count"] != int((expected > threshold).sum()):
            found.append(f"anomaly_count {status['anomaly_count']} != expected {int((expected > threshold).sum())}")
        if not np.allclose(results["anomaly_score"].to_numpy(), expected, rtol=1e-4, atol=1e-6):
            found.append("scores differ from the model's")
        if int(results["is_anomaly"].sum()) != status["anomaly_count"]:
            found.append("is_anomaly column disagrees with anomaly_count")
        return found


def user_table(rows: int, seed: int) -> pd.DataFrame:
    frame, _ = inject_anomalies(make_normal_transactions(rows, seed=seed), fraction=0.02, seed=seed)
    return frame


def request(tally: Tally, client: httpx.Client, method: str, url: str, **options: object) -> httpx.Response | None:
    """One request as a well-behaved client makes it: a 429 (e.g. all export slots taken) is asked again
    after its Retry-After, a few times."""
    try:
        for _ in range(RETRIES_AFTER_429):
            answer = client.request(method, url, **options)  # type: ignore[arg-type]
            if answer.status_code != 429:
                break
            time.sleep(float(answer.headers.get("retry-after", "1")))
    except httpx.HTTPError as error:
        tally.error(f"{method} {url}: {type(error).__name__}: {error}")
        return None
    if answer.status_code >= 400:
        tally.error(f"{method} {url}: {answer.status_code} {answer.text[:200]}")
        return None
    return answer


def analyse_one(
    tally: Tally, checker: Checker, client: httpx.Client, headers: dict[str, str], frame: pd.DataFrame, name: str
) -> tuple[float, str | None]:
    """Upload, analyse, poll, download and check; return the seconds from upload to result and the dataset id."""
    started = time.perf_counter()
    content = frame.to_csv(index=False).encode()
    answer = request(
        tally, client, "POST", "/api/anomaly/datasets/upload", headers=headers, files={"file": (name, content)}
    )
    if answer is None:
        return time.perf_counter() - started, None
    dataset_id = answer.json()["id"]
    if request(tally, client, "POST", f"/api/anomaly/datasets/{dataset_id}/analyze", headers=headers) is None:
        return time.perf_counter() - started, dataset_id
    deadline = time.monotonic() + TIMEOUT_SECONDS
    status: dict = {}
    while time.monotonic() < deadline:
        polled = request(tally, client, "GET", f"/api/anomaly/datasets/{dataset_id}/status", headers=headers)
        if polled is None:
            return time.perf_counter() - started, dataset_id
        status = polled.json()
        if status["status"] in ("analyzed", "failed"):
            break
        time.sleep(POLL_SECONDS)
    elapsed = time.perf_counter() - started
    if status.get("status") != "analyzed":
        tally.error(f"{name}: ended {status.get('status')}: {status.get('error')}")
        return elapsed, dataset_id
    results = request(tally, client, "GET", f"/api/anomaly/datasets/{dataset_id}/results?format=csv", headers=headers)
    if results is not None:
        for problem in checker.problems(frame, status, results.content):
            with tally.lock:
                tally.wrong.append(f"{name}: {problem}")
    return elapsed, dataset_id


@dataclass(frozen=True)
class Round:
    """One round of concurrent users."""

    wall_seconds: float
    user_seconds: list[float]
    status_seconds: list[float]


def concurrent_round(url: str, checker: Checker, tally: Tally, users: int, pollers: int, rows: int, seed: int) -> Round:
    with httpx.Client(base_url=url, timeout=TIMEOUT_SECONDS) as client:
        accounts = [login(client) for _ in range(users + pollers)]
        # Each poller watches its own dataset, analysed before the round starts.
        watched = []
        for index, headers in enumerate(accounts[users:]):
            _, dataset_id = analyse_one(tally, checker, client, headers, user_table(500, seed + 1000 + index), "p.csv")
            watched.append((headers, dataset_id))
    frames = [user_table(rows, seed + index) for index in range(users)]
    done = threading.Event()
    round_tally = Tally()

    def poll(headers: dict[str, str], dataset_id: str) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while not done.is_set():
                started = time.perf_counter()
                if request(tally, client, "GET", f"/api/anomaly/datasets/{dataset_id}/status", headers=headers):
                    round_tally.latency(time.perf_counter() - started)

    def act(index: int) -> float:
        with httpx.Client(base_url=url, timeout=TIMEOUT_SECONDS) as client:
            seconds, _ = analyse_one(tally, checker, client, accounts[index], frames[index], f"user{index}.csv")
            return seconds

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=users + pollers) as pool:
        polling = [pool.submit(poll, headers, dataset_id) for headers, dataset_id in watched if dataset_id]
        user_seconds = list(pool.map(act, range(users)))
        wall = time.perf_counter() - started
        done.set()
        for future in polling:
            future.result()
    return Round(wall, user_seconds, round_tally.status_seconds)


def sequential_memory(
    url: str, pid: int, checker: Checker, tally: Tally, count: int, rows: int
) -> list[tuple[int, float]]:
    """RSS after analyses 1, 10, 25, 50, 100, ... and the last of ``count`` sequential analyses."""
    marks = {1, 10, 25, 50, count} | set(range(100, count + 1, 50))
    readings = []
    with httpx.Client(base_url=url, timeout=TIMEOUT_SECONDS) as client:
        headers = login(client)
        for index in range(1, count + 1):
            frame = user_table(rows, 5000 + index)
            _, dataset_id = analyse_one(tally, checker, client, headers, frame, f"seq{index}.csv")
            if dataset_id:
                request(tally, client, "DELETE", f"/api/anomaly/datasets/{dataset_id}", headers=headers)
            if index in marks:
                readings.append((index, memory_mb(pid, "VmRSS")))
                print(f"  {index} analyses: API RSS {readings[-1][1]:.0f} MB", flush=True)
    return readings


def report(arguments: argparse.Namespace, rounds: list[Round], memory: list[tuple[int, float]], tally: Tally) -> str:
    statuses = [seconds for one in rounds for seconds in one.status_seconds]
    users = [seconds for one in rounds for seconds in one.user_seconds]
    wall = statistics.median(one.wall_seconds for one in rounds)
    ms = [1000 * percentile(statuses, share) for share in (50, 99)] + [1000 * max(statuses)] if statuses else [0, 0, 0]
    command = (
        f".venv/bin/python benchmarks/load.py --users {arguments.users} --rows {arguments.rows} "
        f"--rounds {arguments.rounds} --pollers {arguments.pollers} --sequential {arguments.sequential}"
    )
    lines = [
        f"## Load: {arguments.users} concurrent users, {arguments.rows:,}-row CSV each",
        "",
        f"Machine: {machine()}; embedded SecantusDB (--sync-on-commit), one uvicorn worker, loopback.",
        f"Command: `{command}`",
        "",
        "| measure | median | min | max | samples |",
        "| --- | --- | --- | --- | --- |",
        f"| all {arguments.users} users upload, analyse and get their results (s) | **{wall:.1f}** | "
        f"{min(one.wall_seconds for one in rounds):.1f} | {max(one.wall_seconds for one in rounds):.1f} | "
        f"{len(rounds)} rounds |",
        f"| one user's upload → analysed, under that load (s) | **{statistics.median(users):.1f}** | "
        f"{min(users):.1f} | {max(users):.1f} | {len(users)} |",
        f"| status latency while they run: p50 / **p99** / max (ms) | {ms[0]:.1f} / **{ms[1]:.1f}** / {ms[2]:.1f} "
        f"| | | {len(statuses)} requests by {arguments.pollers} pollers |",
        "",
        f"Failed requests: **{len(tally.errors)}**; wrong results: **{len(tally.wrong)}** (row count, anomaly "
        "count and every row's score compared with the same model scoring the same rows locally).",
        "",
        f"API process memory (RSS) over {arguments.sequential} sequential analyses of {arguments.rows:,}-row "
        "uploads (upload, analyse, check, delete):",
        "",
        "| after analysis | " + " | ".join(str(index) for index, _ in memory) + " |",
        "| --- |" + " --- |" * len(memory),
        "| RSS (MB) | " + " | ".join(f"{value:.0f}" for _, value in memory) + " |",
    ]
    if tally.errors or tally.wrong:
        lines += ["", "First problems:", *[f"- {problem}" for problem in (tally.errors + tally.wrong)[:10]]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pollers", type=int, default=5)
    parser.add_argument("--sequential", type=int, default=200)
    parser.add_argument("--output", type=Path)
    arguments = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="load-"))
    try:
        print("Training a model ...", flush=True)
        model_dir = train_model("load-model-")
        checker = Checker(model_dir)
        tally = Tally()
        with (
            embedded_database(workdir) as database_url,
            # Every simulated user registers from this one loopback address: allow them all.
            running_server(
                workdir,
                database_url,
                AUTOENCODER_MODEL_PATH=str(model_dir),
                REGISTRATIONS_PER_ADDRESS=str(10 * (arguments.users + arguments.pollers) * arguments.rounds),
            ) as server,
        ):
            rounds = []
            for number in range(arguments.rounds):
                one = concurrent_round(
                    server.url, checker, tally, arguments.users, arguments.pollers, arguments.rows, 100 * number
                )
                print(
                    f"round {number + 1}: all users done in {one.wall_seconds:.1f} s; "
                    f"status p99 {1000 * percentile(one.status_seconds, 99):.1f} ms", flush=True
                )  # fmt: skip
                rounds.append(one)
            print(f"{arguments.sequential} sequential analyses ...", flush=True)
            memory = sequential_memory(
                server.url, server.process.pid, checker, tally, arguments.sequential, arguments.rows
            )
        write_report(report(arguments, rounds, memory, tally), arguments.output)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if tally.errors or tally.wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
