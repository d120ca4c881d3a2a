"""Benchmarks: measured speed and accuracy against baselines in the same run (``make bench``)."""
