"""Procedural, seeded generators of offline twins of the benchmark datasets."""
