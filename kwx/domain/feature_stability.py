"""How stably a walk-forward model uses each feature: coefficient signs/sizes and permutation importance.

Pure: frames in (one row per window, one column per feature), frames out; the feature audit in
``kwx.audit.features`` loads the models and test weeks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# An L1 penalty leaves exact zeros for dropped features; anything smaller than this is a numerical zero.
ZERO = 1e-10


def coefficient_stability(coefficients: pd.DataFrame, zero: float = ZERO) -> pd.DataFrame:
    """Per feature (column) over windows (rows) of standardized logistic-regression coefficients.

    mean/std (population) of the coefficient, mean |coefficient|, ``nonzero_fraction`` of windows
    that use it, ``majority_sign`` (+1/-1, 0 if never used), ``sign_stability`` = share of the
    windows that use it whose sign is the majority sign (1.0 when never used: there is no sign to
    flip) and ``sign_flips`` (used with both signs).
    """
    values = coefficients.to_numpy(dtype=float)
    positive = (values > zero).sum(axis=0)
    negative = (values < -zero).sum(axis=0)
    used = positive + negative
    majority = np.maximum(positive, negative)
    return pd.DataFrame({
        "coef_mean": values.mean(axis=0),
        "coef_std": values.std(axis=0),
        "coef_mean_abs": np.abs(values).mean(axis=0),
        "nonzero_fraction": used / len(values),
        "majority_sign": np.where(used == 0, 0, np.where(positive >= negative, 1, -1)),
        "sign_stability": np.divide(majority, used, out=np.ones(len(used)), where=used > 0),
        "sign_flips": (positive > 0) & (negative > 0),
    }, index=coefficients.columns)


def aggregate_importance(importances: pd.DataFrame) -> pd.DataFrame:
    """Per feature (column): mean ± std (population) over windows (rows), min, max and rank by mean.

    Each cell is one window's permutation importance (the drop in score when the feature is shuffled).
    """
    values = importances.to_numpy(dtype=float)
    mean = values.mean(axis=0)
    frame = pd.DataFrame({
        "importance_mean": mean,
        "importance_std": values.std(axis=0),
        "importance_min": values.min(axis=0),
        "importance_max": values.max(axis=0),
    }, index=importances.columns)
    frame["importance_rank"] = frame["importance_mean"].rank(ascending=False, method="min").astype(int)
    return frame
