"""Ironic's node JSON per API version: fields newer than the version asked for are left out.

Each node keeps its encoded JSON per version step (`Node.cache`) until it changes.
"""

from __future__ import annotations

import bisect
from typing import Any

import orjson

from sovereign_tui.lab.httpkit import iso_tz
from sovereign_tui.lab.scenario import Node

# Node fields and the minor that introduced each (others exist since 1.1).
FIELD_MIN = {
    "driver_internal_info": 3,
    "name": 5,
    "inspection_finished_at": 6,
    "inspection_started_at": 6,
    "clean_step": 7,
    "raid_config": 12,
    "target_raid_config": 12,
    "states": 14,
    "network_interface": 20,
    "resource_class": 21,
    "portgroups": 24,
    "boot_interface": 31,
    "console_interface": 31,
    "deploy_interface": 31,
    "inspect_interface": 31,
    "management_interface": 31,
    "power_interface": 31,
    "raid_interface": 31,
    "vendor_interface": 31,
    "volume": 32,
    "storage_interface": 33,
    "traits": 37,
    "rescue_interface": 38,
    "bios_interface": 40,
    "fault": 42,
    "deploy_step": 44,
    "conductor_group": 46,
    "automated_clean": 47,
    "protected": 48,
    "protected_reason": 48,
    "conductor": 49,
    "owner": 50,
    "description": 51,
    "allocation_uuid": 52,
    "retired": 61,
    "retired_reason": 61,
    "lessee": 65,
    "network_data": 66,
    "boot_mode": 75,
    "secure_boot": 75,
    "shard": 82,
    "parent_node": 83,
    "firmware_interface": 86,
    "service_step": 89,
    "runbook": 92,
    "disable_power_off": 95,
    "instance_name": 104,
    "health": 109,
}
STEPS = sorted(set(FIELD_MIN.values()) | {2})
BRIEF = ("instance_uuid", "links", "maintenance", "name", "power_state", "provision_state", "uuid")
KNOWN_BASE = frozenset(
    {
        "chassis_uuid",
        "console_enabled",
        "created_at",
        "driver",
        "driver_info",
        "extra",
        "instance_info",
        "instance_uuid",
        "last_error",
        "links",
        "maintenance",
        "maintenance_reason",
        "ports",
        "power_state",
        "properties",
        "provision_state",
        "provision_updated_at",
        "reservation",
        "target_power_state",
        "target_provision_state",
        "updated_at",
        "uuid",
    }
)


class NodeViews:
    def __init__(self, base_url: str) -> None:
        self.base = base_url

    def links(self, path: str) -> list[dict[str, str]]:
        return [
            {"href": f"{self.base}/v1/{path}", "rel": "self"},
            {"href": f"{self.base}/{path}", "rel": "bookmark"},
        ]

    def node_full(self, n: Node, mv: int) -> dict[str, Any]:
        u = n.uuid
        state: str | None = n.provision_state
        if mv < 2 and state == "available":
            state = None
        return {
            "allocation_uuid": None,
            "automated_clean": None,
            "bios_interface": "no-bios",
            "boot_interface": "redfish-virtual-media",
            "boot_mode": "uefi",
            "chassis_uuid": None,
            "clean_step": {},
            "conductor": n.conductor,
            "conductor_group": n.conductor_group,
            "console_enabled": False,
            "console_interface": "no-console",
            "created_at": iso_tz(n.created_at),
            "deploy_interface": "direct",
            "deploy_step": {},
            "description": n.description,
            "disable_power_off": False,
            "driver": n.driver,
            "driver_info": dict(n.driver_info),
            "driver_internal_info": {},
            "extra": dict(n.extra),
            "fault": n.fault,
            "firmware_interface": "redfish",
            "health": "Warning" if n.maintenance else "OK",
            "inspect_interface": "redfish",
            "inspection_finished_at": iso_tz(n.inspection_finished_at),
            "inspection_started_at": iso_tz(n.inspection_started_at),
            "instance_info": dict(n.instance_info),
            "instance_name": n.instance_info.get("display_name"),
            "instance_uuid": n.instance_uuid,
            "last_error": n.last_error,
            "lessee": n.lessee,
            "links": self.links(f"nodes/{u}"),
            "maintenance": n.maintenance,
            "maintenance_reason": n.maintenance_reason,
            "management_interface": "redfish",
            "name": n.name,
            "network_data": {},
            "network_interface": "flat",
            "owner": n.owner,
            "parent_node": None,
            "portgroups": self.links(f"nodes/{u}/portgroups"),
            "ports": self.links(f"nodes/{u}/ports"),
            "power_interface": "redfish",
            "power_state": n.power_state,
            "properties": dict(n.properties),
            "protected": False,
            "protected_reason": None,
            "provision_state": state,
            "provision_updated_at": iso_tz(n.provision_updated_at),
            "raid_config": {},
            "raid_interface": "no-raid",
            "rescue_interface": "no-rescue",
            "reservation": n.reservation,
            "resource_class": n.resource_class,
            "retired": False,
            "retired_reason": None,
            "runbook": None,
            "secure_boot": False,
            "service_step": {},
            "shard": None,
            "states": self.links(f"nodes/{u}/states"),
            "storage_interface": "noop",
            "target_power_state": n.target_power_state,
            "target_provision_state": n.target_provision_state,
            "target_raid_config": {},
            "traits": list(n.traits),
            "updated_at": iso_tz(n.updated_at),
            "uuid": u,
            "vendor_interface": "no-vendor",
            "volume": self.links(f"nodes/{u}/volume"),
        }

    def node(self, n: Node, mv: int) -> dict[str, Any]:
        return {k: v for k, v in self.node_full(n, mv).items() if FIELD_MIN.get(k, 1) <= mv}

    def node_bytes(self, n: Node, mv: int) -> bytes:
        key = bisect.bisect_right(STEPS, mv)
        cached = n.cache.get(key)
        if cached is None:
            cached = n.cache[key] = orjson.dumps(self.node(n, mv))
        return cached
