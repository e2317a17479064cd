"""Datasets: the one Arrow schema and the Ray Data preprocessing pipeline."""
