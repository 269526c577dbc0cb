"""Virtual time: drives the engine's core with sampled durations (no real work runs)."""
