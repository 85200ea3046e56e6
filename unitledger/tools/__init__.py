"""Tools around the pipeline: the synthetic data generator and the benchmark."""
