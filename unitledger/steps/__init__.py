"""The I/O steps the Dagster assets, the CLI and the benchmark run: read staged inputs, call the pure
transforms (unitledger.model), spill to scratch, check (unitledger.checks), publish atomically
(unitledger.warehouse). Dagster assets (pipelines/) are thin wrappers around them, so there is one
implementation."""
