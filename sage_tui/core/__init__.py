"""The studio's core: storage, models, engines, training. No Textual, no heavy imports at load."""
