"""Models: the built-in catalogue, provisioning and the registry of base models and adapters."""
