"""Benchmarks: they measure (speed, memory) and write tables under ``results/bench/``; tests assert."""
