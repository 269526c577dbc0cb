"""How an execution reaches a real target. Real adapters (local shell, dry-run) arrive
with the trio runtime; the engine never imports this package, it is handed adapters."""
