"""The application layer: the use cases every front end (CLI, TUI, HTTP API) shares.

`Studio` holds them; `state` has the typed state they publish. Nothing here imports Textual;
the import direction is one-way: front ends -> studio -> core.
"""

from sage_tui.studio.state import EngineState, EngineStatus, JobStatus
from sage_tui.studio.studio import Studio

__all__ = ["EngineState", "EngineStatus", "JobStatus", "Studio"]
