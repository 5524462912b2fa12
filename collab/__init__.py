"""collab: train LLMs to lead conversations with multiturn-aware rewards."""

__version__ = "0.1.0"
