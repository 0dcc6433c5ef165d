"""Forward windows: the window that trades the coming week, trained on the settled days before it (pure)."""

from __future__ import annotations

from datetime import date, timedelta

from kwx.config import TrainConfig
from kwx.domain.windows import Window


def forward_window(as_of: date, train_days: int, test_days: int) -> Window:
    """Trains on the ``train_days`` climate days before ``as_of`` and trades ``as_of`` and the
    ``test_days - 1`` days after it; named like any walk-forward window (first train day, last trade day)."""
    if train_days < 1 or test_days < 1:
        raise ValueError(f"train_days and test_days must be >= 1, got {train_days} and {test_days}")
    return Window(as_of - timedelta(days=train_days), as_of - timedelta(days=1), as_of,
                  as_of + timedelta(days=test_days - 1))


def forward_config(config: TrainConfig, as_of: date) -> TrainConfig:
    """``config`` with start..end spanning exactly the forward window of ``as_of``: its walk-forward plan is
    that one window, and its fingerprint (the ``config_hash`` version tag) names the config *and* the day,
    which is what makes a retrain for the same day and config find the version it already trained."""
    window = forward_window(as_of, config.train_days, config.test_days)
    return TrainConfig.model_validate({**config.model_dump(), "start": window.train_start, "end": window.test_end})
