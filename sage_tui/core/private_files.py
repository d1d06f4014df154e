"""Files only their user can read: the process umask, and the modes of what the studio creates.

The home holds chats, datasets and weights. Every process of the studio starts with
:func:`keep_private` (the `sage-tui` command and the TUI in `cli.main`, each training runner,
the queue keeper; their own children inherit it, and the supervisor starts runners and the
keeper with it as well): a umask of 0o077, so whatever it or its libraries create (SQLite's
-wal and -shm, torch and safetensors checkpoints, PEFT adapters, logs) is 0600, folders 0700,
whatever the user's own umask. Where the studio creates a file or folder itself it also asks
for the mode (:func:`private_open`, :func:`private_dirs`), so the home stays private when the
code runs without an entry point (tests, scripts). A umask only takes bits away: a file asked
for as 0600 never ends up wider.

Not covered: a folder with a default POSIX ACL (`setfacl -d`) gives what is created in it that
ACL instead of applying the umask; the home's own mode (checked at start, see
`Paths.check_private`) still keeps other users out of everything under it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

PRIVATE_UMASK = 0o077
FILE_MODE = 0o600
DIR_MODE = 0o700


def keep_private() -> int:
    """Give this process (and what it starts) the umask 0o077; returns the previous umask."""
    return os.umask(PRIVATE_UMASK)


def private_open(path: str | os.PathLike[str], flags: int) -> int:
    """An `opener` for :func:`open`: a file it creates is 0600 whatever the umask."""
    return os.open(path, flags, FILE_MODE)


def private_dirs(path: str | os.PathLike[str]) -> Path:
    """`mkdir -p path`, each folder it creates 0700 whatever the umask (folders already there
    are left as they are). OSError when a part of the path is not a folder."""
    target = Path(path)
    missing = []
    folder = target
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made by another process meanwhile
            folder.mkdir(mode=DIR_MODE)
    if not target.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(target))
    return target


def private_tree(path: str | os.PathLike[str]) -> None:
    """Take group and other access away from `path` and everything under it (links are not
    followed): for a folder a library wrote whatever the umask (a converted model)."""
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            _private(os.path.join(root, name))
    _private(path)


def _private(path: str | os.PathLike[str]) -> None:
    status = os.lstat(path)
    if not stat.S_ISLNK(status.st_mode) and stat.S_IMODE(status.st_mode) & 0o077:
        os.chmod(path, stat.S_IMODE(status.st_mode) & 0o700)
