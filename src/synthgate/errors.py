"""Domain errors: each names the file or field at fault and what to do about it.

The CLI prints them without a traceback and exits non-zero (docs/ARCHITECTURE.md, principle 7).
"""

from __future__ import annotations


class SynthgateError(Exception):
    """Base class. ``hint`` tells the user how to fix the problem."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(SynthgateError):
    """A setting in params.yaml or on the command line is invalid."""


class DataError(SynthgateError):
    """An input file or dataset cannot be read or is malformed."""


class ValidationFailed(SynthgateError):
    """A dataset failed validation; the report says which checks failed. ``result`` is the
    ``ValidationResult`` with every check, when validation got that far."""

    exit_code = 1
    result: object | None = None
