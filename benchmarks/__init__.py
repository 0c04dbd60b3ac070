"""Benchmarks: `make bench` prints `BENCH <name> <value> <unit>` lines. Not tests: nothing here asserts."""
