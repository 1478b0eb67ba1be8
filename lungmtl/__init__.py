"""lungmtl: one multi-task network that classifies and segments COVID-19 infection on chest CT."""

__version__ = "0.1.0"
