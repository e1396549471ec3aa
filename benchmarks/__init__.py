"""Reproducible performance measurements, run by `make bench` (see README.md)."""
