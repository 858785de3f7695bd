"""Benchmarks: python -m tests.bench.NAME prints figures and ratios (not run by pytest)."""
