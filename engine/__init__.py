"""The deployment: scenario model, events, the pure scheduling core, reports."""
