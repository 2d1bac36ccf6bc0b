"""Widgets shared by the screens."""

from screens.widgets.snapshot_table import SnapshotTable
from screens.widgets.source_banner import SourceBanner
from screens.widgets.status_line import StatusLine
from screens.widgets.table_pane import TablePane

__all__ = ["SnapshotTable", "SourceBanner", "StatusLine", "TablePane"]
