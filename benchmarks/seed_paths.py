"""The seed's two paths, measured the way the seed runs them, to compare the product against.

    .venv/bin/python benchmarks/seed_paths.py [--rows 50000] [--runs 3] [--output FILE.md]

- The seed's "after" path done naively: the workbook parsed with openpyxl (pandas' default engine for .xlsx),
  the rows scored with Keras ``predict`` at its default batch size of 32. The model is loaded once, outside the
  timing, which favours this path: the seed's route loads it on every request.
- The seed's "before" path, training per upload: through the real API with no model and
  ``AUTOENCODER_FALLBACK_TRAIN=true``, upload to ``analyzed``, training with the default settings.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from harness import (
    Figure,
    benchmark_arguments,
    embedded_database,
    figures_table,
    login,
    running_server,
    timed,
    train_model,
    upload_to_analyzed,
    write_report,
)

from app.utils.sample_data import make_normal_transactions


def naive_seed_analysis(content: bytes, kind: str, detector: object) -> int:
    """Parse with pandas' defaults (openpyxl for .xlsx), score with Keras ``predict``; return the anomaly count."""
    frame = (
        pd.read_excel(io.BytesIO(content), engine="openpyxl") if kind == "xlsx" else pd.read_csv(io.BytesIO(content))
    )
    encoded = detector.preprocessor_.transform(frame)  # type: ignore[attr-defined]
    reconstruction = detector.model_.predict(encoded, verbose=0)  # type: ignore[attr-defined]
    errors = np.mean((encoded - reconstruction) ** 2, axis=1)
    return int((errors > np.percentile(errors, 95)).sum())


def measure(rows: int, runs: int, model_dir: Path) -> list[Figure]:
    """Naive seed-path times for CSV and .xlsx, and training per upload through the API."""
    from app.utils.anomaly_detector import TabularAnomalyDetector

    frame = make_normal_transactions(rows, seed=7)
    files = {"csv": frame.to_csv(index=False).encode()}
    buffer = io.BytesIO()
    frame.to_excel(buffer, index=False)
    files["xlsx"] = buffer.getvalue()
    detector = TabularAnomalyDetector.load(model_dir)
    naive = {
        kind: timed(lambda kind=kind, content=content: naive_seed_analysis(content, kind, detector), runs)
        for kind, content in files.items()
    }

    workdir = Path(tempfile.mkdtemp(prefix="seed-paths-"))
    (workdir / "no-model").mkdir()
    with (
        embedded_database(workdir) as database_url,
        running_server(
            workdir, database_url, AUTOENCODER_MODEL_PATH=str(workdir / "no-model"), AUTOENCODER_FALLBACK_TRAIN="true"
        ) as server,
        httpx.Client(base_url=server.url, timeout=600) as client,
    ):
        headers = login(client)
        training = [upload_to_analyzed(client, headers, "bench.csv", files["csv"])["total"] for _ in range(runs)]
    shutil.rmtree(workdir, ignore_errors=True)
    return [
        Figure(f"seed path, naive: pandas read_csv + Keras predict, {rows:,} x 20 CSV", "s", tuple(naive["csv"])),
        Figure(f"seed path, naive: openpyxl + Keras predict, {rows:,} x 20 XLSX", "s", tuple(naive["xlsx"])),
        Figure(f"seed's before: training per upload (API, fallback), {rows:,} x 20 CSV", "s", tuple(training)),
    ]


def main() -> None:
    arguments = benchmark_arguments(__doc__, rows=50_000, runs=3)
    figures = measure(arguments.rows, arguments.runs, train_model("seed-paths-model-"))
    write_report(figures_table("## The seed's paths", figures), arguments.output)


if __name__ == "__main__":
    main()
