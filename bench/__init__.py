"""pg-platform's benchmarks: one module per measure, run together by `python -m bench`."""
