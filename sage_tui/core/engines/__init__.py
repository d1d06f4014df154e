"""Inference engines: planning vLLM's settings from the hardware, then starting and serving it."""
