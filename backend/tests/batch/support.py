"""Helpers for the batch tests: running the real command, generated inputs, reading an output folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from app.utils.sample_data import inject_anomalies, make_normal_transactions

BACKEND_DIR = Path(__file__).resolve().parents[2]
COMMAND_SECONDS = 300
RESULT_COLUMNS = ["anomaly_score", "is_anomaly", "top_feature"]


@dataclass(frozen=True)
class Outcome:
    """How a run of the command ended."""

    status: int
    stdout: str
    stderr: str

    @property
    def error_line(self) -> str:
        """The ``error: ...`` line the command prints on standard error."""
        lines = [line for line in self.stderr.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1, self.stderr
        return lines[0]


class BatchCommand:
    """``python -m app.batch score`` run from ``backend/`` with the session's models."""

    def __init__(self, models: Path) -> None:
        self.models = models

    def score(self, *arguments: str | Path, scheduler: str | None = None) -> Outcome:
        """Run the command to its end."""
        completed = subprocess.run(
            self._command(arguments, scheduler), cwd=BACKEND_DIR, env=self._env(), capture_output=True, text=True,
            timeout=COMMAND_SECONDS, check=False,
        )  # fmt: skip
        return Outcome(completed.returncode, completed.stdout, completed.stderr)

    def start(self, *arguments: str | Path, scheduler: str | None = None) -> subprocess.Popen[str]:
        """Start the command, its standard output and error piped."""
        return subprocess.Popen(
            self._command(arguments, scheduler), cwd=BACKEND_DIR, env=self._env(), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip

    def _command(self, arguments: tuple[str | Path, ...], scheduler: str | None) -> list[str]:
        command = [sys.executable, "-m", "app.batch", "score", *map(str, arguments)]
        return command + ["--scheduler", scheduler] if scheduler is not None else command

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "MODELS_DIR": str(self.models),
            "AUTOENCODER_MODEL_PATH": str(self.models / "AutoEncoder"),
            "TF_CPP_MIN_LOG_LEVEL": "3",
        }


def transactions(rows: int, seed: int) -> pd.DataFrame:
    """Generated transactions with 2% of the rows pushed out of range (so there are anomalies to find)."""
    frame, _ = inject_anomalies(make_normal_transactions(rows, seed=seed), fraction=0.02, seed=seed)
    return frame


def summary(output: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((output / "_summary.json").read_text(encoding="utf-8"))
    return result


def scored_rows(output: Path) -> pd.DataFrame:
    """Every row of an output folder, in the order of its parts (the inputs' order)."""
    return pd.read_parquet(output).reset_index(drop=True)


def staging_folders(output: Path) -> list[Path]:
    """Temporary folders a run left beside ``output`` (there must never be any once it has ended)."""
    return sorted(output.parent.glob(f".{output.name}.tmp-*"))
