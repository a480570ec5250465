"""Benchmarks: each prints one JSON line with times and ratios (``wsslib bench NAME``)."""
