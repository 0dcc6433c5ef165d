"""kwx: model lifecycle for Kalshi daily-high-temperature markets."""

__version__ = "0.1.0"
