"""Errors a user can act on.

Every failure that comes from the user's input or machine (a path, a name, a file) is raised as a
`SageError` whose message is one line naming the problem. The CLI prints it without a traceback;
the TUI shows it in a notification. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SageError(Exception):
    """A problem the user can fix; the message is one line that names it."""


class HomeError(SageError):
    """SAGE_HOME cannot be created or written."""


class StoreError(SageError):
    """The SQLite database cannot be opened or is not ours."""


class ModelError(SageError):
    """A model name, path or download that cannot be used."""
