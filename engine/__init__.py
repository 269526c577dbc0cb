"""The deployment: scenario model, events, the pure scheduling core, reports."""

from engine._native import refuse_stale

refuse_stale(__file__)
