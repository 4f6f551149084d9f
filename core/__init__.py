"""What every app shares: ids, domain errors and the JSON error handler, pagination, serializer mixins,
the JSON parser; ``core.perf``: the performance layer. Imports Django and DRF only, never an app."""
