"""HTTP clients for the real data sources: Kalshi (markets, candles, settlements) and Visual Crossing."""
