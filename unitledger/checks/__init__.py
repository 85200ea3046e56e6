"""Checks on what the steps produce: Pandera validation, conservation of every billed cent,
freshness of the published tables and the advisory reconciliation checks."""
