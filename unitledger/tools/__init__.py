"""Tools beside the pipeline: synthetic data, format writers, benchmarks."""
