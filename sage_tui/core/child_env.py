"""Environment variables for a child process that some library starts from ``os.environ``.

vLLM starts its EngineCore child from the studio's own environment during
``AsyncLLM.from_engine_args``, and offers no way to hand it one. The studio's environment must
still stay the user's: the training queue, the queue keeper and later engines read the user's
``CUDA_VISIBLE_DEVICES``, not the GPUs the last engine was given. :func:`temporary_environ`
changes ``os.environ`` only for the few seconds a child is being started, one change at a time
in the whole process, and puts back exactly what was there.

While such a change is in force, other threads still start children (the queue spawns
runners); :func:`outer_environ` gives them the environment without the temporary change.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

__all__ = ["outer_environ", "temporary_environ"]

_changing = threading.Lock()
"""Held for the whole time a temporary change is in force: changes never overlap."""
_state = threading.Lock()
"""Held while os.environ is being written or read for :func:`outer_environ`, so a reader
never sees half a change."""
_saved: dict[str, str | None] = {}
"""The values the keys of the change in force had before it (None: absent)."""


@contextmanager
def temporary_environ(changes: Mapping[str, str | None]) -> Iterator[None]:
    """Set (a str) or remove (None) `changes` in ``os.environ`` for the ``with`` block.

    Afterwards every key is as it was, absent keys absent again, even when the block raises.
    Process-wide and not re-entrant: a second change (from any thread) waits for the first to
    end, so two engines started at once cannot see each other's GPUs.
    """
    with _changing:
        with _state:
            saved = {key: os.environ.get(key) for key in changes}
            _saved.update(saved)
            _apply(changes)
        try:
            yield
        finally:
            with _state:
                _apply(saved)
                _saved.clear()


def outer_environ() -> dict[str, str]:
    """A copy of ``os.environ`` as it is outside any :func:`temporary_environ` change."""
    with _state:
        env = dict(os.environ)
        for key, value in _saved.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
    return env


def _apply(changes: Mapping[str, str | None]) -> None:
    for key, value in changes.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


LOOPBACK_COLLECTIVES = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")
"""The variables that choose the network interface gloo and NCCL open their sockets on."""


def loopback_collectives(env: Mapping[str, str]) -> dict[str, str]:
    """For processes of one machine (DDP workers, tensor-parallel engine workers): gloo and
    NCCL on the loopback interface, so their sockets are reachable from this machine only.
    A choice the user made in `env` stands."""
    return {name: "lo" for name in LOOPBACK_COLLECTIVES if name not in env}
