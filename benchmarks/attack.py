"""What hostile or heavy use costs the other users: measured on a real server (embedded SecantusDB, one worker).

    .venv/bin/python benchmarks/attack.py [--rows 50000] [--runs 3] [--output FILE.md]

Per round:

- a flood of 50 parallel registrations from one address: how many accounts are created (the limit is
  REGISTRATIONS_PER_ADDRESS, 20), and how much the server's peak memory (VmHWM, reset before the flood through
  /proc/<pid>/clear_refs) rises above its resident memory before it (each Argon2 hash takes 64 MiB);
- a burst of 30 parallel wrong passwords for one username from one address: how many were checked (401; the
  limit is LOGIN_MAX_FAILURES_PER_USERNAME, 10) and refused (429);
- 8 clients each downloading the ``--rows``-row workbook of an analysed upload at once (a 429 is asked again
  after its Retry-After, as the answer says, until every client has its file) while another user logs in back
  to back: the login latency percentiles, beside those of as many logins with nothing else running. Target:
  login p99 within 1 s.

The benchmark is the server's reverse proxy (``FORWARDED_ALLOW_IPS=127.0.0.1``), so each flood and burst comes
from an address of its own. Figures are medians over ``--runs`` rounds with min-max.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from harness import (
    Figure,
    Server,
    benchmark_arguments,
    embedded_database,
    figures_table,
    login,
    memory_mb,
    percentile,
    reset_peak_memory,
    running_server,
    train_model,
    upload_to_analyzed,
    write_report,
)

from app.utils.sample_data import make_normal_transactions

DOWNLOADERS = 8
BURST = 30
FLOOD = 50
PASSWORD = "benchmark-password"


def registration_flood(server: Server, address: str) -> tuple[int, float]:
    """50 registrations at once from ``address``: accounts created, and peak memory growth (MB) over the flood."""
    reset_peak_memory(server.process.pid)
    resident_before = memory_mb(server.process.pid, "VmRSS")

    def register(_: int) -> int:
        body = {"username": f"flood-{secrets.token_hex(5)}", "password": PASSWORD}
        with httpx.Client(base_url=server.url, timeout=120) as client:
            return client.post("/api/auth/register", json=body, headers={"X-Forwarded-For": address}).status_code

    with ThreadPoolExecutor(max_workers=FLOOD) as pool:
        statuses = list(pool.map(register, range(FLOOD)))
    if set(statuses) - {201, 429}:
        raise SystemExit(f"unexpected answers to the registration flood: {statuses}")
    return statuses.count(201), memory_mb(server.process.pid, "VmHWM") - resident_before


def login_burst(server: Server, address: str) -> tuple[int, int]:
    """30 wrong passwords at once for one new username from ``address``: how many were checked (401), refused (429)."""
    username = f"burst-{secrets.token_hex(5)}"
    with httpx.Client(base_url=server.url, timeout=120) as client:
        client.post("/api/auth/register", json={"username": username, "password": PASSWORD}).raise_for_status()

    def guess(index: int) -> int:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            return client.post(
                "/api/auth/token",
                data={"username": username, "password": f"guess-{index}"},
                headers={"X-Forwarded-For": address},
            ).status_code

    with ThreadPoolExecutor(max_workers=BURST) as pool:
        statuses = list(pool.map(guess, range(BURST)))
    if set(statuses) - {401, 429}:
        raise SystemExit(f"unexpected answers to the login burst: {statuses}")
    return statuses.count(401), statuses.count(429)


def logins_during_downloads(
    server: Server, headers: dict[str, str], dataset_id: str, credentials: dict[str, str]
) -> tuple[list[float], int]:
    """Login latencies (s) while 8 clients download the dataset's workbook, and how many downloads got 429."""
    done = threading.Event()
    refusals: list[int] = []
    latencies: list[float] = []

    def download(_: int) -> None:
        with httpx.Client(base_url=server.url, timeout=600) as client:
            while True:
                answer = client.get(
                    f"/api/anomaly/datasets/{dataset_id}/results", params={"format": "xlsx"}, headers=headers
                )
                if answer.status_code == 200:
                    return
                if answer.status_code != 429:
                    raise SystemExit(f"download answered {answer.status_code}: {answer.text}")
                refusals.append(answer.status_code)
                time.sleep(float(answer.headers["retry-after"]))

    def log_in() -> None:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            while not done.is_set():
                started = time.perf_counter()
                client.post("/api/auth/token", data=credentials).raise_for_status()
                latencies.append(time.perf_counter() - started)

    logins = threading.Thread(target=log_in)
    logins.start()
    with ThreadPoolExecutor(max_workers=DOWNLOADERS) as pool:
        list(pool.map(download, range(DOWNLOADERS)))
    done.set()
    logins.join()
    return latencies, len(refusals)


def logins_alone(server: Server, credentials: dict[str, str], count: int) -> list[float]:
    """Latencies (s) of ``count`` logins back to back with nothing else running."""
    latencies = []
    with httpx.Client(base_url=server.url, timeout=120) as client:
        for _ in range(count):
            started = time.perf_counter()
            client.post("/api/auth/token", data=credentials).raise_for_status()
            latencies.append(time.perf_counter() - started)
    return latencies


def measure(rows: int, runs: int, model_dir: Path) -> list[Figure]:
    """The flood, the burst and logins during downloads, ``runs`` rounds each, on one fresh server."""
    workdir = Path(tempfile.mkdtemp(prefix="attack-"))
    content = make_normal_transactions(rows, seed=9).to_csv(index=False).encode()
    created, growth, checked, throttled, p50, p99, slowest, refused, alone_p50, alone_p99 = ([] for _ in range(10))
    try:
        with (
            embedded_database(workdir) as database_url,
            running_server(
                workdir, database_url, AUTOENCODER_MODEL_PATH=str(model_dir), FORWARDED_ALLOW_IPS="127.0.0.1"
            ) as server,
            httpx.Client(base_url=server.url, timeout=600) as client,
        ):
            headers = login(client)
            dataset_id = upload_to_analyzed(client, headers, "attack.csv", content)["dataset_id"]
            credentials = {"username": f"steady-{secrets.token_hex(4)}", "password": PASSWORD}
            client.post("/api/auth/register", json=credentials).raise_for_status()
            for round_number in range(runs):
                accounts, memory = registration_flood(server, f"198.51.100.{round_number + 1}")
                created.append(accounts)
                growth.append(memory)
                answered_401, answered_429 = login_burst(server, f"203.0.113.{round_number + 1}")
                checked.append(answered_401)
                throttled.append(answered_429)
                latencies, refused_downloads = logins_during_downloads(server, headers, dataset_id, credentials)
                p50.append(percentile(latencies, 50) * 1000)
                p99.append(percentile(latencies, 99) * 1000)
                slowest.append(max(latencies) * 1000)
                refused.append(refused_downloads)
                quiet = logins_alone(server, credentials, len(latencies))
                alone_p50.append(percentile(quiet, 50) * 1000)
                alone_p99.append(percentile(quiet, 99) * 1000)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return [
        Figure(f"accounts created by {FLOOD} parallel registrations from one address", "count", tuple(created),
               "≤ 20"),
        Figure("server peak memory above its resident memory during that flood", "MB", tuple(growth),
               "≤ 4 x 64 MiB"),
        Figure(f"passwords checked (401) in a burst of {BURST} parallel wrong logins", "count", tuple(checked),
               "≤ 10"),
        Figure("logins of that burst refused unchecked (429)", "count", tuple(throttled)),
        Figure(f"login latency p50 during {DOWNLOADERS} concurrent {rows:,}-row .xlsx downloads", "ms", tuple(p50)),
        Figure(f"login latency p99 during {DOWNLOADERS} concurrent {rows:,}-row .xlsx downloads", "ms", tuple(p99),
               "≤ 1,000"),
        Figure("slowest login during those downloads", "ms", tuple(slowest)),
        Figure("downloads answered 429 (asked again after Retry-After)", "count", tuple(refused)),
        Figure("login latency p50, as many logins with nothing else running", "ms", tuple(alone_p50)),
        Figure("login latency p99, as many logins with nothing else running", "ms", tuple(alone_p99)),
    ]  # fmt: skip


def main() -> None:
    arguments = benchmark_arguments(__doc__, rows=50_000, runs=3)
    figures = measure(arguments.rows, arguments.runs, train_model("attack-model-"))
    write_report(figures_table(f"## Attacks and heavy use ({arguments.rows:,}-row workbooks)", figures),
                 arguments.output)  # fmt: skip


if __name__ == "__main__":
    main()
