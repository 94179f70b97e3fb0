"""Benchmarks: `python -m bench` runs the throughput benchmark (bench/throughput.py)."""
