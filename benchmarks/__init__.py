"""Benchmark harness for model_server: `python -m benchmarks.run --help` (see benchmarks/README.md)."""
