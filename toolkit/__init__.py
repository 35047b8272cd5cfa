"""rigpivot: move mining rigs to AI inference and back."""

__version__ = "0.1.0"
