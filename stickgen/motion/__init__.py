"""Motion core: readers, canonical stick figure, projection, timing, physics and quality."""
