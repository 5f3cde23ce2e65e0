"""``make run``'s first step: a demo model, trained once, when the default model path holds none, and a file
to try it on.

    python -m app.demo_model

Generates ``backend/data/normal_samples.xlsx`` (normal transactions shaped like the seed's data) if it is
missing, then runs the seed's command on it: ``python train_autoencoder_model.py data/normal_samples.xlsx``.
A model path set explicitly in ``AUTOENCODER_MODEL_PATH`` is never trained into: without a model there,
the service starts and reports it. It also writes ``test.xlsx`` at the repository root (the demo schema with a
few anomalies in it), the file README's curl flow uploads.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from app.core.config import BACKEND_DIR, REPO_ROOT, get_settings
from app.utils import model_store
from app.utils.sample_data import inject_anomalies, make_normal_transactions

SAMPLE_FILE = BACKEND_DIR / "data" / "normal_samples.xlsx"
SAMPLE_ROWS = 10_000
DEMO_EPOCHS = 30
# README's curl flow uploads this file, from the repository root.
TRY_FILE = REPO_ROOT / "test.xlsx"
TRY_ROWS = 500


def write_try_file(path: Path) -> None:
    """Write the demo schema's rows, a few of them anomalies, as a workbook to try the API on."""
    frame, _ = inject_anomalies(make_normal_transactions(TRY_ROWS, seed=2), fraction=0.02, seed=3)
    frame.to_excel(path, index=False)


def main() -> int:
    """Write the file to try, train the demo model if needed; the training command's exit status (0 when none ran)."""
    if not TRY_FILE.exists():
        write_try_file(TRY_FILE)
        print(f"Wrote {TRY_FILE} ({TRY_ROWS} rows of the demo schema, a few of them anomalies) to try the API on.")
    settings = get_settings()
    if settings.model_path_is_explicit:
        print(f"AUTOENCODER_MODEL_PATH is set ({settings.model_path}): no demo model is trained there.")
        return 0
    try:
        model_store.model_files(settings.model_path)
    except FileNotFoundError:
        pass
    else:
        print(f"Using the model in {settings.model_path}.")
        return 0
    if not SAMPLE_FILE.exists():
        print(f"Generating {SAMPLE_ROWS:,} rows of normal sample data in {SAMPLE_FILE} ...", flush=True)
        SAMPLE_FILE.parent.mkdir(parents=True, exist_ok=True)
        make_normal_transactions(SAMPLE_ROWS, seed=0).to_excel(SAMPLE_FILE, index=False)
    print(f"No model in {settings.model_path}: training a demo model (once; about a minute) ...", flush=True)
    command = [
        sys.executable, "train_autoencoder_model.py", str(SAMPLE_FILE.relative_to(BACKEND_DIR)),
        "--output-dir", str(settings.model_path), "--epochs", str(DEMO_EPOCHS),
    ]  # fmt: skip
    return subprocess.run(command, cwd=BACKEND_DIR, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
