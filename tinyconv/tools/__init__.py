"""Tools around the engine: the benchmark, the per-layer table and the tour runner."""
