"""Order execution: paper and live (Kalshi) orders, fills and positions behind kwx's safety rails."""
