"""Nova's JSON shapes, per microversion (the minor ``X`` of ``2.X``), as its API builds them.

Server bodies do not depend on time, only on the server and the shape, so each server keeps its
encoded JSON per shape (`Server.cache`) until it changes; a page of ``servers/detail`` is then a
join of cached bytes. Shapes change at the microversions listed in `_SERVER_STEPS`.
"""

from __future__ import annotations

import bisect
import hashlib
import time
from typing import Any

import orjson

from sovereign_tui.lab.httpkit import iso_us, iso_z
from sovereign_tui.lab.scenario import Flavor, Host, Migration, Scenario, Server, Service

_SERVER_STEPS = (3, 9, 16, 19, 26, 47, 63, 73, 90, 96, 98, 100)
LIVE_ACTIVE = ("queued", "preparing", "running", "post-migrating")

_STATUS = {
    "active": "ACTIVE",
    "building": "BUILD",
    "stopped": "SHUTOFF",
    "resized": "VERIFY_RESIZE",
    "paused": "PAUSED",
    "suspended": "SUSPENDED",
    "error": "ERROR",
    "deleted": "DELETED",
    "shelved": "SHELVED",
    "shelved_offloaded": "SHELVED_OFFLOADED",
    "rescued": "RESCUE",
    "soft-delete": "SOFT_DELETED",
}
_TASK_STATUS = {
    "migrating": "MIGRATING",
    "resize_prep": "RESIZE",
    "resize_migrating": "RESIZE",
    "resize_migrated": "RESIZE",
    "resize_finish": "RESIZE",
    "resize_reverting": "REVERT_RESIZE",
    "rebooting": "REBOOT",
    "rebooting_hard": "HARD_REBOOT",
    "reboot_pending": "REBOOT",
    "reboot_started": "REBOOT",
    "rebuilding": "REBUILD",
    "rebuild_spawning": "REBUILD",
}


def status_of(s: Server) -> str:
    """Nova's ``status`` from vm_state and task_state."""
    task = s.task_state
    if s.vm_state == "error":
        return "REBUILD" if task in ("rebuilding", "rebuild_spawning") else "ERROR"
    if s.vm_state == "resized":
        return "REVERT_RESIZE" if task == "resize_reverting" else "VERIFY_RESIZE"
    if s.vm_state in ("active", "stopped") and task in _TASK_STATUS:
        return _TASK_STATUS[task]
    return _STATUS.get(s.vm_state, "UNKNOWN")


def host_status(service: Service | None) -> str:
    if service is None:
        return ""
    if service.forced_down:
        return "DOWN"
    if service.disabled:
        return "MAINTENANCE"
    return "UP" if service.alive else "UNKNOWN"


class Views:
    def __init__(self, scenario: Scenario, base_url: str) -> None:
        self.sc = scenario
        self.base = base_url  # http://127.0.0.1:PORT

    # --- servers -------------------------------------------------------------------------------

    def server_bytes(self, s: Server, mv: int, admin: bool) -> bytes:
        key = bisect.bisect_right(_SERVER_STEPS, mv) * 2 + admin
        cached = s.cache.get(key)
        if cached is None:
            cached = s.cache[key] = orjson.dumps(self.server(s, mv, admin))
        return cached

    def server_links(self, sid: str) -> list[dict[str, str]]:
        return [
            {"href": f"{self.base}/v2.1/servers/{sid}", "rel": "self"},
            {"href": f"{self.base}/servers/{sid}", "rel": "bookmark"},
        ]

    def server_brief(self, s: Server) -> dict[str, Any]:
        return {"id": s.id, "links": self.server_links(s.id), "name": s.name}

    def server(self, s: Server, mv: int, admin: bool, show: bool = False) -> dict[str, Any]:
        host = self.sc.hosts_by_name.get(s.host) if s.host else None
        f = s.flavor
        if mv >= 47:
            flavor: dict[str, Any] = {
                "vcpus": f.vcpus,
                "ram": f.ram,
                "disk": f.disk,
                "ephemeral": f.ephemeral,
                "swap": f.swap,
                "original_name": f.name,
                "extra_specs": dict(f.extra_specs),
            }
        else:
            flavor = {"id": f.id, "links": [{"href": f"{self.base}/flavors/{f.id}", "rel": "bookmark"}]}
        image: dict[str, Any] = {
            "id": s.image.id,
            "links": [{"href": f"{self.base}/images/{s.image.id}", "rel": "bookmark"}],
        }
        if mv >= 98:
            image["properties"] = dict(s.image.properties)
        addresses = (
            {
                s.network: [
                    {"OS-EXT-IPS-MAC:mac_addr": s.mac, "OS-EXT-IPS:type": "fixed", "addr": s.ip, "version": 4}
                ]
            }
            if s.host
            else {}
        )
        status = status_of(s)
        d: dict[str, Any] = {
            "OS-DCF:diskConfig": "MANUAL",
            "OS-EXT-AZ:availability_zone": s.az,
            "OS-EXT-STS:power_state": s.power_state,
            "OS-EXT-STS:task_state": s.task_state,
            "OS-EXT-STS:vm_state": s.vm_state,
            "OS-SRV-USG:launched_at": iso_us(s.launched_at) if s.launched_at else None,
            "OS-SRV-USG:terminated_at": None,
            "accessIPv4": "",
            "accessIPv6": "",
            "addresses": addresses,
            "config_drive": "",
            "created": iso_z(s.created),
            "flavor": flavor,
            "hostId": hashlib.sha224((s.project_id + s.host).encode()).hexdigest() if s.host else "",
            "id": s.id,
            "image": image,
            "key_name": s.key_name,
            "links": self.server_links(s.id),
            "metadata": dict(s.metadata),
            "name": s.name,
            "os-extended-volumes:volumes_attached": [
                {"delete_on_termination": False, "id": v} if mv >= 3 else {"id": v} for v in s.volumes
            ],
            "progress": 0,
            "security_groups": [{"name": "default"}],
            "status": status,
            "tenant_id": s.project_id,
            "updated": iso_z(s.updated),
            "user_id": s.user_id,
        }
        if admin:
            d["OS-EXT-SRV-ATTR:host"] = s.host
            d["OS-EXT-SRV-ATTR:hypervisor_hostname"] = host.fqdn if host else None
            d["OS-EXT-SRV-ATTR:instance_name"] = f"instance-{s.number:08x}"
            if mv >= 3:
                d["OS-EXT-SRV-ATTR:hostname"] = s.name
                d["OS-EXT-SRV-ATTR:kernel_id"] = ""
                d["OS-EXT-SRV-ATTR:launch_index"] = 0
                d["OS-EXT-SRV-ATTR:ramdisk_id"] = ""
                d["OS-EXT-SRV-ATTR:reservation_id"] = f"r-{s.number:08x}"
                d["OS-EXT-SRV-ATTR:root_device_name"] = "/dev/vda"
                d["OS-EXT-SRV-ATTR:user_data"] = "I2Nsb3VkLWNvbmZpZwpwYWNrYWdlX3VwZ3JhZGU6IGZhbHNlCg=="
        elif mv >= 90:
            d["OS-EXT-SRV-ATTR:hostname"] = s.name
        if mv >= 9:
            d["locked"] = s.locked
        if mv >= 16 and admin:
            d["host_status"] = host_status(host.service if host else None)
        if mv >= 19:
            d["description"] = s.description
        if mv >= 26:
            d["tags"] = list(s.tags)
        if mv >= 63:
            d["trusted_image_certificates"] = None
        if mv >= 73:
            d["locked_reason"] = s.locked_reason
        if mv >= 96:
            d["pinned_availability_zone"] = s.pinned_az
        if mv >= 100:
            d["scheduler_hints"] = dict(s.scheduler_hints)
        if show and mv >= 71:
            d["server_groups"] = [s.scheduler_hints["group"]] if "group" in s.scheduler_hints else []
        if s.fault is not None and status in ("ERROR", "DELETED"):
            fault = {
                "code": s.fault["code"],
                "created": iso_z(s.fault["created"]),
                "message": s.fault["message"],
            }
            if admin:
                fault["details"] = s.fault.get("details", "")
            d["fault"] = fault
        return d

    # --- hypervisors and services -----------------------------------------------------------

    def service(self, svc: Service, mv: int, now: float) -> dict[str, Any]:
        heartbeat = (now - now % 10) if svc.alive else svc.last_seen
        d: dict[str, Any] = {
            "id": svc.id if mv >= 53 else svc.int_id,
            "binary": svc.binary,
            "disabled_reason": svc.disabled_reason,
            "host": svc.host,
            "state": "up" if svc.up else "down",
            "status": "disabled" if svc.disabled else "enabled",
            "updated_at": iso_us(heartbeat),
            "zone": svc.zone,
        }
        if mv >= 11:
            d["forced_down"] = svc.forced_down
        return d

    def hypervisor(self, h: Host, mv: int, detail: bool, with_servers: bool, now: float) -> dict[str, Any]:
        svc = h.service
        assert svc is not None
        d: dict[str, Any] = {
            "id": h.hypervisor_id if mv >= 53 else h.hyp_int_id,
            "hypervisor_hostname": h.fqdn,
            "state": "up" if svc.up else "down",
            "status": "disabled" if svc.disabled else "enabled",
        }
        if detail:
            d.update(
                {
                    "host_ip": h.ip,
                    "hypervisor_type": "QEMU",
                    "hypervisor_version": 8002002,
                    "service": {
                        "host": h.name,
                        "id": svc.id if mv >= 53 else svc.int_id,
                        "disabled_reason": svc.disabled_reason,
                    },
                }
            )
            if mv < 88:
                cpu_info: dict[str, Any] = {
                    "arch": "x86_64",
                    "model": "SapphireRapids" if h.model.alias in ("h100", "h200") else "EPYC-Milan",
                    "vendor": "Intel" if h.model.alias in ("h100", "h200") else "AMD",
                    "features": ["avx512f", "amx-tile", "pdpe1gb"]
                    if h.model.alias in ("h100", "h200")
                    else ["avx2"],
                    "topology": {"cores": h.vcpus // 4, "threads": 2, "sockets": 2},
                }
                d.update(
                    {
                        "cpu_info": cpu_info if mv >= 28 else orjson.dumps(cpu_info).decode(),
                        "current_workload": 0,
                        "disk_available_least": h.local_gb - h.local_gb_used,
                        "free_disk_gb": h.local_gb - h.local_gb_used,
                        "free_ram_mb": h.memory_mb - h.memory_mb_used,
                        "local_gb": h.local_gb,
                        "local_gb_used": h.local_gb_used,
                        "memory_mb": h.memory_mb,
                        "memory_mb_used": h.memory_mb_used,
                        "running_vms": len(h.server_ids),
                        "vcpus": h.vcpus,
                        "vcpus_used": h.vcpus_used,
                    }
                )
            else:
                d["uptime"] = _uptime(now, h.booted_at, len(h.server_ids))
        if with_servers and h.server_ids:
            d["servers"] = [
                {"name": self.sc.servers[i].name, "uuid": i}
                for i in sorted(h.server_ids)
                if i in self.sc.servers
            ]
        return d

    # --- flavors -------------------------------------------------------------------------------

    def flavor(self, f: Flavor, mv: int, detail: bool) -> dict[str, Any]:
        links = [
            {"href": f"{self.base}/v2.1/flavors/{f.id}", "rel": "self"},
            {"href": f"{self.base}/flavors/{f.id}", "rel": "bookmark"},
        ]
        d: dict[str, Any] = {"id": f.id, "links": links, "name": f.name}
        if mv >= 55:
            d["description"] = f.description
        if detail:
            d.update(
                {
                    "OS-FLV-DISABLED:disabled": False,
                    "OS-FLV-EXT-DATA:ephemeral": f.ephemeral,
                    "disk": f.disk,
                    "os-flavor-access:is_public": f.is_public,
                    "ram": f.ram,
                    "rxtx_factor": 1.0,
                    "swap": f.swap if f.swap or mv >= 75 else "",
                    "vcpus": f.vcpus,
                }
            )
            if mv >= 61:
                d["extra_specs"] = dict(f.extra_specs)
        return d

    # --- migrations ----------------------------------------------------------------------------

    def migration(self, m: Migration, mv: int) -> dict[str, Any]:
        d: dict[str, Any] = {
            "created_at": iso_us(m.created),
            "dest_compute": m.dest_compute,
            "dest_host": m.dest_host,
            "dest_node": m.dest_node,
            "id": m.id,
            "instance_uuid": m.server_id,
            "new_instance_type_id": m.flavor_int_id,
            "old_instance_type_id": m.flavor_int_id,
            "source_compute": m.source_compute,
            "source_node": m.source_node,
            "status": m.status,
            "updated_at": iso_us(m.updated),
        }
        if mv >= 23:
            d["migration_type"] = m.migration_type
            if m.migration_type == "live-migration" and m.status in LIVE_ACTIVE:
                d["links"] = [
                    {"href": f"{self.base}/v2.1/servers/{m.server_id}/migrations/{m.id}", "rel": "self"},
                    {"href": f"{self.base}/servers/{m.server_id}/migrations/{m.id}", "rel": "bookmark"},
                ]
        if mv >= 59:
            d["uuid"] = m.uuid
        if mv >= 80:
            d["user_id"] = m.user_id
            d["project_id"] = m.project_id
        return d

    def server_migration(self, m: Migration, mv: int, now: float) -> dict[str, Any]:
        """A live migration in progress, with its memory copy progress at `now` (monotonic)."""
        processed = m.memory_total if m.finished_copy else 0
        if m.running_since is not None and not m.finished_copy and m.running_s > 0:
            share = min(1.0, max(0.0, (now - m.running_since) / m.running_s))
            processed = int(m.memory_total * share)
        d: dict[str, Any] = {
            "created_at": iso_us(m.created),
            "dest_compute": m.dest_compute,
            "dest_host": m.dest_host,
            "dest_node": m.dest_node,
            "disk_processed_bytes": 0,
            "disk_remaining_bytes": 0,
            "disk_total_bytes": 0,
            "id": m.id,
            "memory_processed_bytes": processed,
            "memory_remaining_bytes": m.memory_total - processed,
            "memory_total_bytes": m.memory_total,
            "server_uuid": m.server_id,
            "source_compute": m.source_compute,
            "source_node": m.source_node,
            "status": m.status,
            "updated_at": iso_us(m.updated),
        }
        if mv >= 59:
            d["uuid"] = m.uuid
        if mv >= 80:
            d["user_id"] = m.user_id
            d["project_id"] = m.project_id
        return d


def _uptime(now: float, booted_at: float, users: int) -> str:
    """What ``uptime`` prints, as libvirt's driver reports it from 2.88 (`now` is wall time)."""
    clock = time.strftime("%H:%M:%S", time.gmtime(now))
    days, rem = divmod(int(now - booted_at), 86400)
    load = "load average: 0.52, 0.48, 0.45"
    return f" {clock} up {days} days, {rem // 3600:2d}:{rem % 3600 // 60:02d},  {users} users,  {load}"
