"""sage-tui: fine-tune a model with LoRA, use it as the chat backend, chat with it."""

__version__ = "0.1.0"
