"""Errors a user can cause. Each renders as one line saying what went wrong and where."""
from __future__ import annotations


class NetspecError(Exception):
    """Base of every error netspec raises on purpose (the CLI prints these without a traceback)."""


class SpecError(NetspecError):
    """A problem in a spec file: carries the file, line, layer and field it concerns."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 column: int | None = None, layer: str | None = None, field: str | None = None):
        self.message, self.file, self.line, self.column = message, file, line, column
        self.layer, self.field = layer, field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file
            if self.line:
                where += f":{self.line}"
                if self.column:
                    where += f":{self.column}"
            where += ": "
        return f"{where}{self.message}"

    def located(self, file: str | None, line: int | None) -> "SpecError":
        """Fill in the file and line where they are not known yet."""
        if self.file is None:
            self.file = file
        if self.line is None:
            self.line = line
        return self


class DataError(SpecError):
    """A data set or database that is missing or unreadable (the spec's `source`)."""


class DivergedError(NetspecError):
    """Training produced a NaN or infinite loss or gradient (stopped before it is saved)."""


class WeightsError(NetspecError):
    """A weights or solver-state file that is missing, truncated or does not fit the net."""
