"""Experiments: one module per CLI command, and the registry of model names and variants."""
