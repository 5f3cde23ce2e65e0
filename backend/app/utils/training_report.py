"""A one-page picture of a training run: did the model learn, and where does the threshold cut?"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.utils.anomaly_detector import TabularAnomalyDetector


def write_training_report(detector: TabularAnomalyDetector, path: Path) -> None:
    """Plot the loss per epoch and the histogram of held-out training scores with the threshold, to ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers
    import matplotlib.pyplot as plt

    figure, (loss_axes, score_axes) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    epochs = range(1, len(detector.history_.get("loss", [])) + 1)
    loss_axes.plot(epochs, detector.history_.get("loss", []), label="training loss")
    if "val_loss" in detector.history_:
        loss_axes.plot(epochs, detector.history_["val_loss"], label="validation loss")
    loss_axes.set(title="Reconstruction loss per epoch", xlabel="epoch", ylabel="mean squared error")
    loss_axes.set_yscale("log")
    loss_axes.legend()

    scores = detector.training_scores_
    assert scores is not None
    score_axes.hist(scores, bins=60, color="#4878a8")
    score_axes.axvline(
        detector.threshold,
        color="#c0392b",
        linestyle="--",
        label=f"threshold {detector.threshold:.4f} ({detector.threshold_percentile:g}th percentile)",
    )
    score_axes.set(title="Anomaly scores of held-out training rows", xlabel="anomaly score", ylabel="rows")
    score_axes.legend()
    figure.savefig(path, dpi=100)
    plt.close(figure)
