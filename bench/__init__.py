"""Benchmarks (`just bench`): each is a module run with `python -m`, writing its figures under
bench-results/."""
