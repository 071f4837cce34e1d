"""Diagnostics kept for the speed work: not canonical benchmarks (see README.md here)."""
