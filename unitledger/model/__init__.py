"""Pure transforms, Polars LazyFrame in and LazyFrame out (no I/O, no Dagster): requests with their
cost, intents, the per-feature tables and the reconciliation."""
