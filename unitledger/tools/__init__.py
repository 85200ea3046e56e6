"""Tools around the pipeline: the synthetic data generator, its telemetry format writers and the benchmarks."""
