"""sovereign-tui: one console for a sovereign AI stack's GPU infrastructure."""

__version__ = "0.1.0"
