"""Benchmarks and the study: scripts that measure, each run as a module from the repository root
(`python -m benchmarks.accuracy report`, `python -m benchmarks.study table2`); see benchmarks/README.md.

Tests check behaviour; these measure. Every figure in README.md and docs/ comes from one of them.
"""
