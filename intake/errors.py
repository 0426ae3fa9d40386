"""The service's exception family.

Every error names the file or host involved, what was expected and how to fix it,
because the reader is usually the city's IT contractor at a terminal, not a developer.
"""

from __future__ import annotations

from pathlib import Path


class IntakeError(Exception):
    """Base class for every error the service raises on purpose."""


class ConfigError(IntakeError):
    """The TOML configuration is missing, malformed or contradictory."""


class RulesError(IntakeError):
    """A rules or partner file is wrong; carries every problem with file and line."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class MailboxError(IntakeError):
    """The IMAP server could not be reached, logged into or read."""


class SendError(IntakeError):
    """The SMTP server refused or could not be reached."""


class Problem:
    """One located problem in a data file: ``path:line: message``."""

    def __init__(self, path: Path | str, line: int | None, message: str):
        self.path = Path(path)
        self.line = line
        self.message = message

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        return f"{where}: {self.message}"

    def __repr__(self) -> str:
        return f"Problem({self!s})"
