"""fm of the lab: the active alarms, their suppression, and the alarms the platform sets.

As in fm, an alarm is keyed by (alarm id, entity instance id): setting it again updates it in
place (same uuid). The texts of the alarms the lab sets (200.001 host locked, 200.004 host
failed, 250.001 configuration out-of-date, 100.101 platform CPU, 280.001 subcloud offline,
280.002 subcloud out-of-sync) follow StarlingX's own.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sovereign_tui.lab.timeline import Timeline

SEVERITIES = ("critical", "major", "minor", "warning")


@dataclass(slots=True, eq=False)
class StxAlarm:
    uuid: str
    alarm_id: str
    entity_instance_id: str
    entity_type_id: str
    severity: str
    reason_text: str
    timestamp: float
    alarm_type: str
    probable_cause: str
    proposed_repair_action: str
    service_affecting: bool = False
    mgmt_affecting: bool = False
    degrade_affecting: bool = False


class AlarmBoard:
    def __init__(self, timeline: Timeline, rng: random.Random) -> None:
        self.timeline = timeline
        self.rng = rng
        self.alarms: dict[tuple[str, str], StxAlarm] = {}
        self.suppressed: set[str] = {"100.114"}
        """Alarm ids whose alarms are suppressed (fm's event suppression)."""

    def set(
        self,
        alarm_id: str,
        entity: str,
        severity: str,
        reason: str,
        *,
        at: float | None = None,
        entity_type: str = "host",
        alarm_type: str = "operational-violation",
        cause: str = "out-of-service",
        repair: str = "",
        service_affecting: bool = False,
        mgmt_affecting: bool = False,
        degrade_affecting: bool = False,
    ) -> StxAlarm:
        if severity not in SEVERITIES:
            raise ValueError(f"alarm severity must be one of {SEVERITIES}, got {severity!r}")
        old = self.alarms.get((alarm_id, entity))
        alarm = StxAlarm(
            uuid=old.uuid if old is not None else str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            alarm_id=alarm_id,
            entity_instance_id=entity,
            entity_type_id=entity_type,
            severity=severity,
            reason_text=reason,
            timestamp=at if at is not None else self.timeline.wall(),
            alarm_type=alarm_type,
            probable_cause=cause,
            proposed_repair_action=repair,
            service_affecting=service_affecting,
            mgmt_affecting=mgmt_affecting,
            degrade_affecting=degrade_affecting,
        )
        self.alarms[(alarm_id, entity)] = alarm
        return alarm

    def clear(self, alarm_id: str, entity: str) -> bool:
        return self.alarms.pop((alarm_id, entity), None) is not None

    def by_uuid(self, ident: str) -> StxAlarm | None:
        return next((a for a in self.alarms.values() if a.uuid == ident), None)

    def active(self, include_suppress: bool = False) -> list[StxAlarm]:
        """Newest first; suppressed ones only when asked for, as ``fm alarm-list`` does."""
        alarms = [a for a in self.alarms.values() if include_suppress or a.alarm_id not in self.suppressed]
        return sorted(alarms, key=lambda a: (-a.timestamp, a.uuid))

    def summary(self, include_suppress: bool = False) -> dict[str, Any]:
        counts = dict.fromkeys(SEVERITIES, 0)
        for a in self.active(include_suppress):
            counts[a.severity] += 1
        status = "critical" if counts["critical"] else "degraded" if counts["major"] else "OK"
        return {
            "critical": counts["critical"],
            "major": counts["major"],
            "minor": counts["minor"],
            "warnings": counts["warning"],
            "status": status,
        }

    # --- the alarms the platform sets ----------------------------------------------------------

    def host(
        self, name: str, alarm_id: str, at: float | None = None, *, applied: str = "", target: str = ""
    ) -> None:
        entity = f"host={name}"
        if alarm_id == "200.001":
            self.set(
                alarm_id,
                entity,
                "warning",
                f"{name} was administratively locked to take it out-of-service.",
                at=at,
                repair="Administratively unlock Host to bring it back in-service.",
            )
        elif alarm_id == "200.004":
            self.set(
                alarm_id,
                entity,
                "critical",
                f"{name} experienced a service-affecting failure. Auto-recovery in progress. "
                "Manual Lock and Unlock may be required if auto-recovery is unsuccessful.",
                at=at,
                cause="application-subsystem-failure",
                repair="If auto-recovery is consistently unable to recover host to the unlocked-enabled "
                "state contact next level of support or lock and replace failing host.",
                service_affecting=True,
                mgmt_affecting=True,
            )
        elif alarm_id == "250.001":
            self.set(
                alarm_id,
                entity,
                "major",
                f"{name} Configuration is out-of-date. (applied: {applied} target: {target})",
                at=at,
                cause="unspecified-reason",
                repair="Lock and unlock host to update config.",
                mgmt_affecting=True,
            )
        elif alarm_id == "100.101":
            actual = 90 + self.rng.uniform(1, 9)
            self.set(
                alarm_id,
                entity,
                "major",
                f"Platform CPU threshold exceeded ; threshold 90.00%, actual {actual:.2f}%",
                at=at,
                alarm_type="equipment",
                cause="threshold-crossed",
                repair="Monitor and if condition persists, contact next level of support.",
                degrade_affecting=True,
            )
        else:
            raise ValueError(f"no host alarm {alarm_id} in the lab")

    def subcloud_offline(self, name: str, at: float | None = None) -> None:
        self.set(
            "280.001",
            f"subcloud={name}",
            "critical",
            f"{name} is offline",
            at=at,
            entity_type="subcloud",
            alarm_type="communication",
            cause="loss-of-signal",
            repair="Wait for subcloud to become online; if problem persists contact next level of support.",
            service_affecting=True,
            mgmt_affecting=True,
        )

    def sync(self, name: str, endpoints: Mapping[str, str], managed: bool, at: float | None = None) -> None:
        """280.002 per out-of-sync endpoint of a managed subcloud; cleared otherwise."""
        for endpoint, status in endpoints.items():
            entity = f"subcloud={name}.resource={endpoint}"
            if status != "out-of-sync" or not managed:
                self.clear("280.002", entity)
            elif ("280.002", entity) not in self.alarms:
                self.set(
                    "280.002",
                    entity,
                    "major",
                    f"{name} {endpoint} sync_status is out-of-sync",
                    at=at,
                    entity_type="subcloud.resource",
                    alarm_type="other",
                    cause="unspecified-reason",
                    repair="If problem persists contact next level of support",
                )
