"""Fine-tuning: job specs and presets, the runner (a child process), the supervisor."""
