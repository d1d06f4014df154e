"""The studio's OpenAI-compatible HTTP API (FastAPI + uvicorn over `studio.serving`).

A front end, above the studio like the TUI and beside it: it is imported only when serving
starts (`sage-tui serve`, or the TUI's toggle), never at the studio's start.
"""
