"""Train the autoencoder once on a large file of normal rows and save it for the API to load.

    cd backend
    python train_autoencoder_model.py data/normal_samples.xlsx
    python train_autoencoder_model.py data/normal_samples.csv --output-dir models/autoencoder_v1

Writes ``autoencoder.h5``, ``metadata.pkl`` and ``training_report.png`` into the output directory
(default: ``AUTOENCODER_MODEL_PATH``, i.e. ``Model/AutoEncoder`` under ``backend/``). Bad input gets one line
on stderr and exit status 2, and nothing is written.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter hides the steps
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pandas as pd  # noqa: E402

from app.core.config import get_settings  # noqa: E402
from app.utils.model_store import METADATA_FILENAME, MODEL_FILENAME, REPORT_FILENAME  # noqa: E402
from app.utils.table_reader import TableReadError, read_table  # noqa: E402
from app.utils.training import TooFewRowsError, TrainingParameters, train_model, usable_rows  # noqa: E402

RULE = "=" * 80
EXIT_USAGE = 2


class _OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line on stderr, like every other error of this script."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {message} (see --help)\n")


def _percentage(value: str) -> float:
    number = float(value)
    if not 0 < number < 100:
        raise argparse.ArgumentTypeError(f"must be between 0 and 100, got {value}")
    return number


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def _fraction(value: str) -> float:
    number = float(value)
    if not 0 <= number < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return number


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The contract's flags."""
    parser = _OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_file", type=Path, help="normal rows to learn from: .csv, .xlsx or .xls")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="where to write the model (default: AUTOENCODER_MODEL_PATH, Model/AutoEncoder)",
    )
    parser.add_argument("--encoding-dim", type=_positive, default=8, help="size of the bottleneck (default 8)")
    parser.add_argument(
        "--threshold-percentile",
        type=_percentage,
        default=95.0,
        help="percentile of normal scores above which a row is an anomaly (default 95)",
    )
    parser.add_argument("--epochs", type=_positive, default=50, help="maximum epochs; early stopping may end sooner")
    parser.add_argument("--batch-size", type=_positive, default=64)
    parser.add_argument(
        "--validation-split",
        type=_fraction,
        default=0.2,
        help="share of rows held out for early stopping and the threshold (default 0.2)",
    )
    parser.add_argument("--seed", type=int, default=None, help="make the run reproducible")
    return parser.parse_args(argv)


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def _shorten(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + ("..." if len(names) > shown else "")


def _display(path: Path) -> str:
    """The path as the user would type it: relative to the working directory where possible."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load_training_data(data_file: Path) -> pd.DataFrame:
    """Read the training file and drop fully empty rows, refusing files with too few usable rows."""
    try:
        return usable_rows(read_table(data_file), str(data_file))
    except (TableReadError, TooFewRowsError) as error:
        _fail(str(error))


def main(argv: list[str] | None = None) -> int:
    """Run the four steps and print the seed's summary; return the exit status."""
    arguments = parse_arguments(argv)
    output_dir = arguments.output_dir or get_settings().model_path
    print(RULE, "Autoencoder Training Script", RULE, sep="\n")

    print(f"\n[1/4] Loading training data from: {arguments.data_file}")
    frame = load_training_data(arguments.data_file)
    columns = [str(column) for column in frame.columns]
    print(f"✓ Loaded {len(frame):,} rows × {len(columns)} columns")
    print(f"  Columns: {_shorten(columns)}")

    print("\n[2/4] Initializing autoencoder detector...")
    parameters = TrainingParameters(
        encoding_dim=arguments.encoding_dim,
        threshold_percentile=arguments.threshold_percentile,
        epochs=arguments.epochs,
        batch_size=arguments.batch_size,
        validation_split=arguments.validation_split,
        seed=arguments.seed,
    )
    print("✓ Detector initialized")

    print("\n[3/4] Training autoencoder model...")
    print("   This may take several minutes depending on dataset size...")
    print("   Training parameters:")
    print(f"     - Encoding dimension: {parameters.encoding_dim}")
    print(f"     - Threshold percentile: {parameters.threshold_percentile:g}")
    print(f"     - Epochs: {parameters.epochs}")
    print(f"     - Batch size: {parameters.batch_size}")
    print(f"     - Validation split: {parameters.validation_split * 100:g}%\n")
    try:
        trained = train_model(frame, output_dir, parameters, verbose=1 if sys.stdout.isatty() else 2)
    except ValueError as error:
        _fail(str(error))
    detector = trained.detector
    stopped_early = (
        f" (early stopping after {trained.epochs_run} epochs, best weights restored)"
        if trained.epochs_run < parameters.epochs
        else ""
    )
    print(f"\n✓ Training complete!{stopped_early}")
    for name, reason in detector.dropped_columns.items():
        print(f"  Left out: {name} ({reason})")

    print(f"\n[4/4] Saving trained model to: {_display(output_dir)}")
    print("✓ Model saved successfully!")

    shown_dir = _display(output_dir)
    print("", RULE, "Training Summary", RULE, sep="\n")
    print(f"Model directory:    {shown_dir}")
    print(f"Files created:      - {shown_dir}/{MODEL_FILENAME}")
    print(f"                    - {shown_dir}/{METADATA_FILENAME}")
    print(f"                    - {shown_dir}/{REPORT_FILENAME}")
    print(f"Threshold:          {detector.threshold:.6f}")
    print(f"Features:           {len(detector.feature_names)}")
    print(f"Feature names:      {_shorten(detector.feature_names)}")
    print(f"Model version:      {detector.model_info['version']}")

    print("", RULE, "Validation Check", RULE, sep="\n")
    print("Running anomaly detection on training data...")
    check = trained.validation
    print(f"✓ Detected {check.anomaly_count:,} anomalies out of {check.row_count:,} rows ({check.rate_percent:.2f}%)\n")
    print(f"{'✓' if check.verdict == 'good' else '⚠'} {check.message}")

    print("", RULE, "✅ Training Complete!", RULE, sep="\n")
    print("\nNext steps:")
    print("1. The model is now ready to use")
    print("2. Upload datasets via the API - analysis should complete in 5-10 seconds")
    print("3. The backend will automatically load this pre-trained model")
    print(f"\nNote: The model files are located at: {trained.directory.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
