"""Errors a user can act on.

Every failure that comes from the user's input or machine (a path, a name, a file) is raised as a
`SageError` whose message is one line naming the problem. The CLI prints it without a traceback;
the TUI shows it in a notification. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


def one_line(err: BaseException, *, last: bool = False) -> str:
    """An exception as one line for a user: its first (or `last`) non-empty line, else its type.

    Tracebacks stay in logs; what a notification, a job's error or a CLI message shows is this.
    Libraries that put the cause at the end of a long message (vLLM) want `last=True`.
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return lines[-1] if last else lines[0]


def describe_error(err: BaseException) -> str:
    """What went wrong, for a user: a SageError's own message, anything else as "Type: its
    first line" (the type says it is a bug or a library's failure, not the user's input)."""
    return str(err) if isinstance(err, SageError) else f"{type(err).__name__}: {one_line(err)}"


class SageError(Exception):
    """A problem the user can fix; the message is one line that names it."""


class HomeError(SageError):
    """SAGE_HOME cannot be created or written."""


class UnsafeNameError(SageError):
    """An id or name (typed, or read back from the database or a file) that cannot name a
    folder under SAGE_HOME: no path is built from it."""


class StoreError(SageError):
    """The SQLite database cannot be opened or is not ours."""


class ModelError(SageError):
    """A model name, path or download that cannot be used."""
