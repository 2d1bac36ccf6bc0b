"""Headless export: the snapshot as data, on its own path (never a TUI run headless).

JSON is the snapshot encoded by msgspec; its JSON Schema is generated from the model and checked
in as ``sovereign_tui/schema/export.schema.json`` (a test keeps the two equal, so a change of the
contract is always a deliberate, reviewed diff).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import msgspec

from sovereign_tui.model import SCHEMA_VERSION, Snapshot

SCHEMA_RESOURCE = "export.schema.json"

_encoder = msgspec.json.Encoder(order="deterministic")


def to_json(snapshot: Snapshot) -> bytes:
    """One snapshot as compact JSON (no trailing newline)."""
    return _encoder.encode(snapshot)


def generate_schema() -> dict[str, Any]:
    """The JSON Schema of the export, generated from the model."""
    # Through JSON and back, so it compares equal to the checked-in file (tuples become lists).
    schema: dict[str, Any] = json.loads(msgspec.json.encode(msgspec.json.schema(Snapshot)))
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "sovereign-tui export"
    schema["description"] = (
        f"One snapshot of sovereign-tui (schema_version {SCHEMA_VERSION}); see the README's export section."
    )
    return schema


def schema_text() -> str:
    return json.dumps(generate_schema(), indent=2, sort_keys=True) + "\n"


def checked_in_schema() -> dict[str, Any]:
    text = resources.files("sovereign_tui.schema").joinpath(SCHEMA_RESOURCE).read_text()
    loaded: dict[str, Any] = json.loads(text)
    return loaded
