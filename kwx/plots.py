"""PNG figures for MLflow artifacts and acceptance reports (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display
import matplotlib.pyplot as plt


def reliability_diagram(curves: dict[str, dict[str, list[float]]], path: Path, title: str) -> Path:
    """One line per labelled reliability curve (mean predicted vs observed), marker size ~ rows."""
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated")
    for label, curve in curves.items():
        counts = curve.get("counts") or [1] * len(curve["mean_predicted"])
        total = max(sum(counts), 1)
        ax.plot(curve["mean_predicted"], curve["fraction_positive"], marker="o", label=label)
        ax.scatter(curve["mean_predicted"], curve["fraction_positive"], s=[20 + 400 * c / total for c in counts],
                   alpha=0.3)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted probability", ylabel="observed frequency", title=title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
