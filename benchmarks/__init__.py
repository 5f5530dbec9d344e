"""Benchmarks of alternators-ppl: each item runs in a fresh process and prints JSON."""
