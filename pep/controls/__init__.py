"""Risk controls: kill switch, lifecycle and rate limits before policy evaluation; anomaly
detection over recorded decisions, and the containment that acts on it."""
