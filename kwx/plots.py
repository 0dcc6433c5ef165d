"""PNG figures for MLflow artifacts and acceptance reports (matplotlib, headless)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # never pyplot: no global figure state, no GUI backend to pick or close


def reliability_diagram(curves: dict[str, dict[str, list[float]]], path: Path, title: str, n_bins: int = 10) -> Path:
    """Labelled reliability curves (mean predicted vs observed) on one plot, with each curve's rows per bin
    as grouped bars on a log scale below it, so a bin resting on a handful of rows is visible as such.

    ``n_bins`` is the uniform binning the curves were computed with (``kwx.domain.metrics.reliability``).
    """
    fig = Figure(figsize=(5.5, 7.0))
    ax, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    width = 0.8 / (n_bins * max(len(curves), 1))
    for i, (label, curve) in enumerate(curves.items()):
        color = f"C{i}"
        mean_predicted = np.asarray(curve["mean_predicted"], dtype=float)
        counts = curve.get("counts")
        total = f", {int(np.sum(counts)):,} rows" if counts is not None else ""
        ax.plot(mean_predicted, curve["fraction_positive"], marker="o", color=color, label=f"{label}{total}")
        if counts is not None:
            # A bin's mean prediction lies inside the bin, so the binning rule applied to it recovers the bin.
            centres = (edges[:-1] + edges[1:])[np.searchsorted(edges[1:-1], mean_predicted)] / 2
            hist.bar(centres + (i - (len(curves) - 1) / 2) * width, counts, width=width, color=color, alpha=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed frequency")
    ax.set_title("\n".join(textwrap.wrap(title, 62)), fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    hist.set(xlabel="predicted probability", ylabel="rows per bin (log)")
    hist.set_yscale("log")
    hist.set_xticks(edges, minor=True)
    hist.grid(alpha=0.3, axis="y")
    # Fixed margins for this fixed-size figure: tight_layout measured every tick label and took 40 % of the
    # diagram's time, which `kwx monitor` pays per evaluated week.
    fig.subplots_adjust(left=0.16, right=0.97, top=0.93, bottom=0.08, hspace=0.08)
    fig.savefig(path, dpi=110)
    return path


def coefficient_heatmap(coefficients, path: Path, title: str) -> Path:
    """Windows (rows) × features (columns) of coefficients on a diverging scale centred on zero."""
    values = coefficients.to_numpy(dtype=float)
    limit = max(float(abs(values).max()), 1e-12)
    fig = Figure(figsize=(max(6.0, 0.45 * values.shape[1] + 2), max(3.0, 0.35 * values.shape[0] + 1.8)))
    ax = fig.subplots()
    image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(values.shape[1]), coefficients.columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(values.shape[0]), coefficients.index, fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="coefficient")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def importance_bars(summary, path: Path, title: str) -> Path:
    """Horizontal bars of mean importance with ± std error bars, most important on top."""
    ordered = summary.sort_values("importance_mean")
    fig = Figure(figsize=(6.5, max(3.0, 0.3 * len(ordered) + 1.2)))
    ax = fig.subplots()
    ax.barh(ordered.index, ordered["importance_mean"], xerr=ordered["importance_std"], color="tab:blue",
            ecolor="grey", capsize=2)
    ax.axvline(0, color="grey", linewidth=1)
    ax.set_xlabel("increase in test log loss when shuffled")
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def equity_curves(curves: dict[str, pd.Series], path: Path, title: str) -> Path:
    """Equity in dollars over settlement days, one line per strategy (e.g. blend, market only, model only)."""
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    for label, equity in curves.items():
        ax.plot(pd.to_datetime(equity.index), equity.to_numpy(), label=label, linewidth=1.5)
    ax.set(xlabel="settlement day", ylabel="equity ($)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def metric_by_weight(grid: pd.DataFrame, metric: str, path: Path, title: str) -> Path:
    """A backtest metric against the blend weight, the best weight marked."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(grid["blend_weight"], grid[metric], marker="o")
    best = grid.loc[grid[metric].idxmax()]
    ax.scatter([best["blend_weight"]], [best[metric]], s=120, facecolors="none", edgecolors="red",
               label=f"best w={best['blend_weight']:.2f}")
    ax.set(xlabel="blend weight w (p_blend = w·p_model + (1 − w)·p_market)", ylabel=metric, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
