"""What each upload attack costs the API process and how fast it is answered, and how the real-file corpus fares.

Starts the embedded database and ``python -m app.serve`` with the default limits (100 MB uploads, 2 parser
children of 4 GB) and 150 MB of storage per user, so that ten 99 MB uploads at once are parsed and then
refused by the quota instead of filling the embedded database with 2 GB. Before each request the API
process's peak memory (VmHWM) is reset; its growth and the time to the answer are reported as the median
(min-max) of ``--runs`` runs. Usage: ``python benchmarks/upload_attacks.py [--runs 3] [--output FILE]``.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
from harness import benchmark_arguments, embedded_database, login, machine, running_server, write_report

from tests.api.hostile_files import (  # noqa: E402 - backend/ is put on sys.path by harness
    CORPUS_FILES,
    PeakMemory,
    dense_workbook,
    large_csv,
    looping_cfb,
    memory_bytes,
    shared_string_bomb,
)

UPLOAD = "/api/anomaly/datasets/upload"


def _attacks() -> list[tuple[str, str, Callable[[], bytes]]]:
    def distinct_text() -> bytes:
        lines = [b"id,comment,code"] + [b"%d,comment number %d is unique,%x" % (i, i, i * 7919) for i in range(450_000)]
        return b"\n".join(lines) + b"\n"

    def columns(count: int) -> Callable[[], bytes]:
        return lambda: b",".join(b"c%d" % i for i in range(count)) + b"\n" + b",".join([b"1"] * count) + b"\n"

    return [
        (
            "shared-string bomb: 2,000 cells x one 400 KB string",
            "strings.xlsx",
            lambda: shared_string_bomb(2_000, 400_000),
        ),
        ("dense sheet: 100,000,000 cells, 12 MB at 130:1", "dense.xlsx", lambda: dense_workbook(100_000_000)),
        ("looping OLE sector chain (.xls, 1.5 KB, made here)", "loop.xls", looping_cfb),
        (
            "phpspreadsheet__oleloop.xls (1 KB)",
            "oleloop.xls",
            lambda: (CORPUS_FILES / "phpspreadsheet__oleloop.xls").read_bytes(),
        ),
        ("17 MB CSV of distinct text", "distinct.csv", distinct_text),
        ("60,000 columns", "wide.csv", columns(60_000)),
        ("1,000,000 columns", "wider.csv", columns(1_000_000)),
        ("70 MB CSV, 820,000 rows, stored", "large.csv", lambda: large_csv(70 * 2**20)),
    ]


PEAKS: list[float] = []  # the API process's absolute peak (MB) during each measure


def _measure(
    server: object, client: httpx.Client, headers: dict[str, str], filename: str, content: bytes
) -> tuple[int, float, float]:
    with PeakMemory(server) as memory:  # type: ignore[arg-type]
        started = time.perf_counter()
        answer = client.post(UPLOAD, headers=headers, files={"file": (filename, content)})
        seconds = time.perf_counter() - started
    PEAKS.append((memory.baseline + memory.growth) / 2**20)
    if answer.status_code == 201:
        client.delete(f"/api/anomaly/datasets/{answer.json()['id']}", headers=headers)
    return answer.status_code, memory.growth / 2**20, seconds


def _ten_at_once(server: object, url: str) -> tuple[list[int], float, float]:
    content = large_csv(99 * 2**20)
    with httpx.Client(base_url=url, timeout=600) as client:
        accounts = [login(client) for _ in range(10)]
    statuses: list[int] = []

    def send(headers: dict[str, str]) -> None:
        with httpx.Client(base_url=url, timeout=600) as client:
            statuses.append(client.post(UPLOAD, headers=headers, files={"file": ("large.csv", content)}).status_code)

    with PeakMemory(server) as memory:  # type: ignore[arg-type]
        started = time.perf_counter()
        senders = [threading.Thread(target=send, args=(headers,)) for headers in accounts]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        seconds = time.perf_counter() - started
    PEAKS.append((memory.baseline + memory.growth) / 2**20)
    return statuses, memory.growth / 2**20, seconds


def _corpus(url: str) -> Counter[tuple[str, str]]:
    manifest = json.loads((CORPUS_FILES.parent / "manifest.json").read_text())
    outcomes: Counter[tuple[str, str]] = Counter()
    with httpx.Client(base_url=url, timeout=120) as client:
        headers = login(client)
        for item in manifest:
            status = client.post(
                UPLOAD, headers=headers, files={"file": (item["file"], (CORPUS_FILES / item["file"]).read_bytes())}
            ).status_code
            outcomes[
                item["expect"], "201" if status == 201 else f"{status // 100}xx" if status >= 500 else str(status)
            ] += 1
    return outcomes


def main() -> None:
    arguments = benchmark_arguments(__doc__, rows=0, runs=3)
    rows = ["| upload | answer | API peak memory growth (MB) | time to answer (s) |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="upload-attacks-") as folder:
        workdir = Path(folder)
        empty_models = workdir / "no-models" / "AutoEncoder"
        with (
            embedded_database(workdir) as database_url,
            running_server(
                workdir, database_url, AUTOENCODER_MODEL_PATH=str(empty_models), MAX_STORAGE_MB_PER_USER="150"
            ) as server,
            httpx.Client(base_url=server.url, timeout=600) as client,
        ):
            headers = login(client)
            started_mb = memory_bytes(server, "VmRSS") / 2**20  # type: ignore[arg-type]
            for name, filename, build in _attacks():
                content = build()
                runs = [_measure(server, client, headers, filename, content) for _ in range(arguments.runs)]
                statuses = sorted({status for status, _, _ in runs})
                growth = [megabytes for _, megabytes, _ in runs]
                seconds = [elapsed for _, _, elapsed in runs]
                rows.append(
                    f"| {name} | {'/'.join(map(str, statuses))} | {statistics.median(growth):,.0f} "
                    f"({min(growth):,.0f}-{max(growth):,.0f}) | {statistics.median(seconds):.2f} "
                    f"({min(seconds):.2f}-{max(seconds):.2f}) |"
                )
            ten = [_ten_at_once(server, server.url) for _ in range(arguments.runs)]
            growth = [megabytes for _, megabytes, _ in ten]
            seconds = [elapsed for _, _, elapsed in ten]
            statuses = sorted({status for run, _, _ in ten for status in run})
            rows.append(
                f"| ten 99 MB CSVs at once (parsed, then over the 150 MB quota) | {'/'.join(map(str, statuses))} "
                f"| {statistics.median(growth):,.0f} ({min(growth):,.0f}-{max(growth):,.0f}) "
                f"| {statistics.median(seconds):.2f} ({min(seconds):.2f}-{max(seconds):.2f}) |"
            )
            corpus = _corpus(server.url)
    corpus_rows = ["| expected | answers |", "|---|---|"] + [
        f"| {expect} | "
        + ", ".join(f"{status}: {count}" for (kind, status), count in sorted(corpus.items()) if kind == expect)
        + " |"
        for expect in ("table", "either", "refuse")
    ]
    write_report(
        "\n".join(
            [
                "# Upload attacks",
                "",
                f"Machine: {machine()}. Median (min-max) of {arguments.runs} runs; the API process's VmHWM is "
                "reset before each.",
                "",
                *rows,
                "",
                f"The API process: {started_mb:,.0f} MB resident once started, {max(PEAKS):,.0f} MB at its highest "
                "peak during any of these (growth is measured from the resident memory before each upload, which "
                "includes heap freed by the uploads before it).",
                "",
                f"Real-file corpus ({sum(corpus.values())} files, one upload each):",
                "",
                *corpus_rows,
            ]
        ),
        arguments.output,
    )


if __name__ == "__main__":
    main()
