"""BioInstruct: shared core (settings, base model, adapter registry, CLI)."""

__version__ = "0.1.0"
