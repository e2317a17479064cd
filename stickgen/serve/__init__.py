"""Serving: the Ray Serve application."""
