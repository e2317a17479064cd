"""Generation: text to motion, one prompt or a bulk dataset."""
