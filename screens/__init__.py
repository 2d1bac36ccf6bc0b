"""The Textual screens, one per module; `SCREENS` lists those the app switches between."""

from screens.registry import SCREENS, ScreenEntry

__all__ = ["SCREENS", "ScreenEntry"]
