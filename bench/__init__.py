"""Benchmarks (see README)."""
