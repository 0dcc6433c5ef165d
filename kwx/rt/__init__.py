"""Real-time: clocks, data sources and the signal loop."""
