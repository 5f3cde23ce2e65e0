"""The one-time training CLI, run as a user runs it: a real process, its output and its files."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from app.core.config import BACKEND_DIR
from app.utils.anomaly_detector import TabularAnomalyDetector

SCRIPT = BACKEND_DIR / "train_autoencoder_model.py"


def run_cli(*arguments: str, cwd: Path = BACKEND_DIR, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *arguments],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def training_xlsx(training_frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "normal_samples.xlsx"
    training_frame.to_excel(path, index=False)
    return path


@pytest.fixture(scope="module")
def cli_run(training_xlsx: Path, tmp_path_factory: pytest.TempPathFactory):
    output_dir = tmp_path_factory.mktemp("cli") / "autoencoder_v1"
    result = run_cli(str(training_xlsx), "--output-dir", str(output_dir), "--epochs", "3", "--seed", "1")
    return result, output_dir


def test_cli_prints_the_seed_steps_summary_and_validation_check(cli_run):
    result, output_dir = cli_run

    assert result.returncode == 0, result.stderr
    out = result.stdout
    for step in (
        "[1/4] Loading training data from:",
        "[2/4] Initializing autoencoder detector...",
        "[3/4] Training autoencoder model...",
        "[4/4] Saving trained model to:",
    ):
        assert step in out
    assert "✓ Loaded 1,500 rows × 20 columns" in out
    assert "Epoch 1/3" in out
    assert re.search(r"Threshold:\s+\d+\.\d{6}", out)
    assert re.search(r"Features:\s+19\n", out)
    assert "Feature names:      timestamp, region, channel, value1, value2..." in out
    assert "Left out: id (identifier (unique per row))" in out
    match = re.search(r"Detected ([\d,]+) anomalies out of 1,500 rows \((\d+\.\d\d)%\)", out)
    assert match
    assert "acceptable range (1-10%)" in out or "Anomaly rate is" in out
    assert f"Note: The model files are located at: {output_dir.resolve()}" in out


def test_cli_writes_a_loadable_model_and_report(cli_run):
    _, output_dir = cli_run

    assert sorted(p.name for p in output_dir.iterdir()) == ["autoencoder.h5", "metadata.pkl", "training_report.png"]
    detector = TabularAnomalyDetector.load(output_dir)
    assert detector.is_trained and len(detector.feature_names) == 19


def test_cli_default_output_is_the_configured_model_path(training_xlsx: Path, tmp_path: Path):
    model_path = tmp_path / "Model" / "AutoEncoder"
    data = tmp_path / "normal.csv"
    pd.read_excel(training_xlsx, engine="calamine").to_csv(data, index=False)

    result = run_cli(str(data), "--epochs", "1", cwd=tmp_path, env={"AUTOENCODER_MODEL_PATH": str(model_path)})

    assert result.returncode == 0, result.stderr
    assert (model_path / "autoencoder.h5").is_file()


@pytest.mark.parametrize(
    ("make_input", "message"),
    [
        (lambda d: d / "missing.csv", "File not found"),
        (lambda d: _write(d / "tiny.csv", "a,b\n" + "1,2\n" * 50), "50 usable rows; at least 100"),
        (lambda d: _write(d / "notes.txt", "hello"), "Unsupported file type"),
        (
            lambda d: _write(d / "keys.csv", "id,constant\n" + "".join(f"{i},1\n" for i in range(150))),
            "No usable feature column",
        ),
    ],
    ids=["missing-file", "too-few-rows", "unsupported-type", "no-usable-column"],
)
def test_cli_errors_are_one_line_exit_2_and_leave_the_old_model(
    saved_model_dir: Path, tmp_path: Path, make_input, message: str
):
    output_dir = tmp_path / "AutoEncoder"
    shutil.copytree(saved_model_dir, output_dir)
    before = {p.name: p.read_bytes() for p in output_dir.iterdir()}

    result = run_cli(str(make_input(tmp_path)), "--output-dir", str(output_dir), "--epochs", "1")

    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line
    assert {p.name: p.read_bytes() for p in output_dir.iterdir()} == before


def test_cli_rejects_bad_flags_in_one_line(tmp_path: Path):
    result = run_cli("data.csv", "--threshold-percentile", "150")

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: argument --threshold-percentile: must be between 0 and 100, got 150 (see --help)"
    ]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
