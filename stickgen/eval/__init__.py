"""Evaluation: the frozen evaluator and metrics."""
