"""The ``lungmtl`` command line (argument parsing only; each verb calls one API function)."""

from .app import main

__all__ = ["main"]
