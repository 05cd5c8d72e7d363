"""Pure data: policies, findings, severities, durations.

Nothing is re-exported here: ``model.policy`` imports pydantic, and ``guywire check``
without ``--policy`` never needs it (see ``model.baseline``).
"""
