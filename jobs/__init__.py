"""Ray job entrypoints (thin layers over the library)."""
