"""Training: the Ray Train loop, recipes and configs."""
