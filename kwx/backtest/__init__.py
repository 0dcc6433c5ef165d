"""Backtests: the live signal path replayed over history with a maker-first fill model, logged to MLflow."""
