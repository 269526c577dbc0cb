"""Virtual time: drives the engine's core with sampled durations (no real work runs)."""

from engine._native import refuse_stale

refuse_stale(__file__)
