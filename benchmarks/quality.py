"""Detection quality on ADBench's classical datasets: this detector beside IsolationForest and k-NN.

Protocol (ADBench's "train on normal data" setting): a stratified 70/30 split per seed, the detector fitted on
the normal rows of the 70%, every row of the 30% scored; ROC-AUC and PR-AUC (average precision) against the
labels. Three seeds per dataset; the table shows means over seeds, the last rows the means over datasets.

    .venv/bin/python benchmarks/quality.py                # the twelve datasets of the target
    .venv/bin/python benchmarks/quality.py --all          # every dataset in shared/datasets/adbench
    .venv/bin/python benchmarks/quality.py --datasets WBC glass --seeds 1

Columns: ``autoencoder`` is this product's detector (``TabularAnomalyDetector``, default settings);
``recon only`` / ``neighbour only`` are its two score parts alone; ``IForest`` is scikit-learn's
IsolationForest with defaults; ``kNN`` is the mean distance to the 5 nearest training rows on standardised
inputs (scikit-learn ``NearestNeighbors``), the stronger classical reference; ``PyOD AE`` is PyOD's
AutoEncoder where PyOD and PyTorch are installed.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backend"))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.ensemble import IsolationForest  # noqa: E402
from sklearn.metrics import average_precision_score, roc_auc_score  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neighbors import NearestNeighbors  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from app.utils.anomaly_detector import TabularAnomalyDetector  # noqa: E402

DATASETS_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "adbench"
TARGET_DATASETS = (
    "cardio",
    "thyroid",
    "satellite",
    "shuttle",
    "pendigits",
    "mammography",
    "optdigits",
    "letter",
    "vowels",
    "annthyroid",
    "WBC",
    "glass",
)


def dataset_files() -> dict[str, Path]:
    """Map each dataset's short name (``6_cardio.npz`` -> ``cardio``) to its file."""
    return {path.stem.split("_", 1)[1]: path for path in sorted(DATASETS_DIR.glob("*.npz"))}


def score_autoencoder(train: np.ndarray, test: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """This product's detector, and each of its two score parts alone."""
    columns = [f"x{index}" for index in range(train.shape[1])]
    detector = TabularAnomalyDetector(random_state=seed)
    detector.train(pd.DataFrame(train, columns=columns), verbose=0)
    details = detector.score_details(pd.DataFrame(test, columns=columns))
    return {
        "autoencoder": details.scores,
        "recon only": details.reconstruction_error,
        "neighbour only": details.neighbour_distance,
    }


def score_isolation_forest(train: np.ndarray, test: np.ndarray, seed: int) -> np.ndarray:
    return -IsolationForest(random_state=seed).fit(train).score_samples(test)


def score_knn(train: np.ndarray, test: np.ndarray, seed: int) -> np.ndarray:
    scaler = StandardScaler().fit(train)
    neighbours = NearestNeighbors(n_neighbors=5).fit(scaler.transform(train))
    distances, _ = neighbours.kneighbors(scaler.transform(test))
    return distances.mean(axis=1)


def pyod_autoencoder() -> object | None:
    """PyOD's AutoEncoder class, or None where PyOD or its PyTorch backend is not installed."""
    try:
        import torch  # noqa: F401  PyOD's AutoEncoder runs on PyTorch
        from pyod.models.auto_encoder import AutoEncoder

        return AutoEncoder
    except ImportError:
        return None


def run(names: list[str], seeds: int) -> pd.DataFrame:
    files = dataset_files()
    unknown = [name for name in names if name not in files]
    if unknown:
        raise SystemExit(f"unknown datasets: {', '.join(unknown)}; known: {', '.join(files)}")
    pyod_class = pyod_autoencoder()
    rows = []
    for name in names:
        arrays = np.load(files[name], allow_pickle=False)
        features, labels = arrays["X"].astype(np.float64), arrays["y"].astype(np.int64)
        for seed in range(seeds):
            x_train, x_test, y_train, y_test = train_test_split(
                features, labels, test_size=0.3, stratify=labels, random_state=seed
            )
            normal = x_train[y_train == 0]
            started = time.perf_counter()
            results = score_autoencoder(normal, x_test, seed)
            seconds = time.perf_counter() - started
            results["IForest"] = score_isolation_forest(normal, x_test, seed)
            results["kNN"] = score_knn(normal, x_test, seed)
            if pyod_class is not None:
                model = pyod_class(random_state=seed, verbose=0)
                results["PyOD AE"] = model.fit(normal).decision_function(x_test)
            for method, scores in results.items():
                rows.append(
                    {
                        "dataset": name,
                        "seed": seed,
                        "method": method,
                        "roc_auc": roc_auc_score(y_test, scores),
                        "pr_auc": average_precision_score(y_test, scores),
                    }
                )
            rows.append({"dataset": name, "seed": seed, "method": "autoencoder", "train_seconds": seconds})
            print(
                f"  {name} seed {seed}: autoencoder {rows[-len(results) - 1]['roc_auc']:.3f} ({seconds:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
    return pd.DataFrame(rows)


def table(results: pd.DataFrame) -> str:
    """Markdown: ROC-AUC and PR-AUC per dataset and method (mean over seeds), then the means."""
    scored = results.dropna(subset=["roc_auc"])
    methods = list(dict.fromkeys(scored["method"]))
    per_dataset = scored.groupby(["dataset", "method"], sort=False)[["roc_auc", "pr_auc"]].mean()
    header = "| dataset | " + " | ".join(f"{m} ROC | {m} PR" for m in methods) + " |"
    lines = [header, "|" + "---|" * (1 + 2 * len(methods))]
    for dataset in dict.fromkeys(scored["dataset"]):
        cells = [
            f"{per_dataset.loc[(dataset, m), 'roc_auc']:.3f} | {per_dataset.loc[(dataset, m), 'pr_auc']:.3f}"
            for m in methods
        ]
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    means = per_dataset.groupby(level="method", sort=False).mean()
    cells = [f"**{means.loc[m, 'roc_auc']:.3f}** | **{means.loc[m, 'pr_auc']:.3f}**" for m in methods]
    lines.append("| **mean** | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(TARGET_DATASETS))
    parser.add_argument("--all", action="store_true", help="every dataset in shared/datasets/adbench")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--output", type=Path, help="also write the Markdown table to this file")
    arguments = parser.parse_args()
    names = list(dataset_files()) if arguments.all else arguments.datasets
    started = time.perf_counter()
    results = run(names, arguments.seeds)
    scored = results.dropna(subset=["roc_auc"])
    mean_roc = scored.groupby("method")["roc_auc"].mean()
    report = "\n".join(
        [
            f"Detection quality, {len(names)} datasets x {arguments.seeds} seeds "
            f"({platform.machine()}, {os.cpu_count()} cores, {time.perf_counter() - started:.0f} s in all)",
            "",
            table(results),
            "",
            f"autoencoder - IForest mean ROC-AUC: {mean_roc['autoencoder'] - mean_roc['IForest']:+.3f}; "
            f"mean training time per fit: {results['train_seconds'].mean():.1f} s"
            + ("" if pyod_autoencoder() else "; PyOD AE: not run (needs PyTorch, not installed)"),
        ]
    )
    print(report)
    if arguments.output:
        arguments.output.parent.mkdir(parents=True, exist_ok=True)
        arguments.output.write_text(report + "\n")


if __name__ == "__main__":
    main()
