"""kwx: model lifecycle for Kalshi daily-high-temperature markets."""

# Loaded first on purpose: skops, which saves kwx's models, looks up each scipy.special ufunc's module by walking
# the loaded modules in import order. Behind MLflow's ~1,800 modules, importing skops took ~0.7 s (in the first
# model's save); with scipy.special loaded ahead of them, ~0.25 s. Every kwx command loads scipy anyway.
import scipy.special  # noqa: F401

__version__ = "0.1.0"
