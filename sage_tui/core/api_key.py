"""The key the studio's OpenAI-compatible API asks for.

Made on first use (`sage-` and 43 URL-safe random characters), kept in `$SAGE_HOME/api_key`
(0600, written atomically), or set by the user with `sage-tui serve --api-key`. The server
compares what a request sends with :func:`same_key` (constant time).
"""

from __future__ import annotations

import hmac
import secrets

from sage_tui.core.atomic import write_atomic
from sage_tui.errors import SageError
from sage_tui.paths import Paths

PREFIX = "sage-"
SHORTEST = 16
"""A key set by hand must be at least this long."""


class ApiKeyError(SageError):
    """The key file cannot be read, or a key given by hand is unusable."""


def check_key(key: str) -> str:
    """`key` if it can serve as an API key; ApiKeyError saying what is wrong otherwise."""
    if len(key) < SHORTEST:
        raise ApiKeyError(f"an API key needs at least {SHORTEST} characters; this has {len(key)}")
    if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
        raise ApiKeyError("an API key takes printable ASCII characters without spaces")
    return key


def read_key(paths: Paths) -> str | None:
    """The stored key, or None when none was made yet."""
    try:
        key = paths.api_key_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeError) as err:
        raise ApiKeyError(f"cannot read the API key in {paths.api_key_file}: {err}") from err
    try:
        return check_key(key)
    except ApiKeyError as err:
        raise ApiKeyError(
            f"{paths.api_key_file} holds no usable key ({err}): set one with"
            " `sage-tui serve --api-key KEY`, or delete the file to have one made"
        ) from None


def save_key(paths: Paths, key: str) -> str:
    """Store `key` (checked) as the API key; returns it."""
    write_atomic(paths.api_key_file, check_key(key) + "\n")
    return key


def api_key(paths: Paths) -> str:
    """The stored key, made and stored first if there is none."""
    return read_key(paths) or save_key(paths, PREFIX + secrets.token_urlsafe(32))


def same_key(given: str, key: str) -> bool:
    """Whether `given` is `key`, in time that does not depend on where they differ."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), key.encode("utf-8"))
