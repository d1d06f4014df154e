"""Worker failures reach the user: one path for every node that starts workers."""

from __future__ import annotations

from textual.dom import DOMNode
from textual.worker import Worker, WorkerState


def forward_worker_failure(node: DOMNode, event: Worker.StateChanged) -> None:
    """Hand a failure of a worker started on `node` to the App, which tells the user.

    Worker messages do not bubble, so each node that starts workers (every screen, and widgets
    with workers of their own) calls this from its `Worker.StateChanged` handler.
    """
    if event.state == WorkerState.ERROR:
        node.app.post_message(Worker.StateChanged(event.worker, event.state))
