"""Evaluation: scoring, InferenceData, calibration and figures."""
