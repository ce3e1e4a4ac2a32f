"""Benchmarks of the training path against the common recipe (`make bench`, gpu_check.sh)."""
