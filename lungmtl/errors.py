"""Errors that name the file (and row) at fault, so a user can fix the input."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad user input: a file, a table row or a config value that cannot be used.

    Args:
        where: the file (or other thing) at fault.
        problem: what is wrong with it, in words a user can act on.
        row: the table row, where the input is a row of a slice table or manifest.
    """

    def __init__(self, where: str | Path, problem: str, row: int | None = None):
        self.where = str(where)
        self.problem = problem
        self.row = row
        at = f"{self.where} (row {row})" if row is not None else self.where
        super().__init__(f"{at}: {problem}")

    def __reduce__(self):  # rebuilt from its parts, so it crosses process boundaries
        return type(self), (self.where, self.problem, self.row)


class CheckpointError(InputError):
    """A checkpoint that is missing, truncated, or not one of lungmtl's."""
