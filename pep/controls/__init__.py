"""Risk controls applied before policy evaluation: kill switch, lifecycle, rate limits."""
