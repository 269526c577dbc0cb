"""Importers (SPEC §5): what Octopus Deploy, GitHub Actions, GitLab CI and Jenkins
recorded, turned into a scenario and a recorded event log.

One pure module per tool: the parsed contents of its files in, an `Imported` out
(scenario data, events, notes); the command line reads and writes the files. What they
share — strict parsing, JSON paths in errors, times, building the log — is in `record`.
"""
