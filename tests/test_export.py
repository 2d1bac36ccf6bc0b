"""The JSON export is a contract: the schema is checked in, every export validates against it,
and a fixed store state encodes to a golden file byte for byte."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import msgspec
import pytest

from sovereign_tui.clock import FakeClock
from sovereign_tui.export import checked_in_schema, generate_schema, to_json
from sovereign_tui.model import (
    FacetOf,
    Gpu,
    GpuProcess,
    IronicFacet,
    NovaFacet,
    Observation,
    Snapshot,
    SourceHealth,
    Workload,
)
from sovereign_tui.store import Store

GOLDEN = Path(__file__).parent / "golden" / "export.json"


def fixed_store() -> Store:
    clock = FakeClock(start=100.0, epoch=1_800_000_000.0)
    store = Store(clock)
    t = clock.time()

    def up(target: str) -> SourceHealth:
        return SourceHealth(
            target=target,
            source=target.split(":")[0],
            endpoint="lab",
            interval_s=10.0,
            up=True,
            last_success=t,
            polls=1,
        )

    store.apply(
        up("nvml:gpu-01"),
        Observation(
            gpus=(
                Gpu(
                    source="nvml:gpu-01",
                    observed_at=t,
                    host="gpu-01",
                    index=0,
                    uuid="GPU-aaaa",
                    name="NVIDIA H100 80GB HBM3",
                    memory_total_mib=81559.0,
                    memory_used_mib=40000.0,
                    util_gpu_pct=87.0,
                    temperature_c=61.0,
                    power_w=402.5,
                    power_limit_w=700.0,
                    ecc_uncorrected=0,
                    mig_mode="Disabled",
                    processes=(GpuProcess(pid=4242, name="python3", used_memory_mib=39000.0),),
                ),
                Gpu(
                    source="nvml:gpu-01",
                    observed_at=t,
                    host="gpu-01",
                    index=1,
                    uuid="GPU-bbbb",
                    name="NVIDIA H100 80GB HBM3",
                ),
            )
        ),
    )
    store.apply(
        up("nova:lab"),
        Observation(
            facets=(
                FacetOf(
                    "gpu-01",
                    NovaFacet(
                        source="nova:lab", observed_at=t, hypervisor_id="hv-1", state="up", status="enabled"
                    ),
                ),
            ),
            workloads=(
                Workload(
                    source="nova:lab",
                    observed_at=t,
                    kind="nova-vm",
                    id="vm-1",
                    name="train-1",
                    state="ACTIVE",
                    host="gpu-01",
                    owner="research",
                    gpus=1,
                    flavor="g1.h100x1",
                    gpu_kind="passthrough",
                ),
            ),
        ),
    )
    store.apply(
        up("ironic:lab"),
        Observation(
            facets=(
                FacetOf(
                    "bm-01",
                    IronicFacet(
                        source="ironic:lab", observed_at=t, node_uuid="n-1", provision_state="available"
                    ),
                ),
            )
        ),
    )
    store.set_health(
        SourceHealth(
            target="dcgm:10.0.0.9:9400",
            source="dcgm",
            endpoint="10.0.0.9:9400",
            interval_s=15.0,
            up=False,
            last_error="HTTP 500 from /metrics",
            polls=3,
            failures=3,
            consecutive_failures=3,
        )
    )
    return store


def test_checked_in_schema_matches_the_model() -> None:
    assert checked_in_schema() == generate_schema(), "run `just schema` and review the diff"


def test_export_validates_against_the_schema() -> None:
    doc = json.loads(to_json(fixed_store().snapshot()))
    jsonschema.validate(doc, checked_in_schema())
    assert doc["schema_version"] == 1


def test_schema_rejects_what_the_model_would_not_produce() -> None:
    doc = json.loads(to_json(fixed_store().snapshot()))
    doc["gpus"][0]["index"] = "zero"
    with pytest.raises(jsonschema.ValidationError, match="'zero' is not of type 'integer'"):
        jsonschema.validate(doc, checked_in_schema())


def test_export_matches_the_golden_file() -> None:
    got = json.dumps(json.loads(to_json(fixed_store().snapshot())), indent=2, sort_keys=True) + "\n"
    if os.environ.get("SOVEREIGN_UPDATE_GOLDEN"):
        GOLDEN.write_text(got)
    assert got == GOLDEN.read_text(), "export changed: review, then SOVEREIGN_UPDATE_GOLDEN=1 pytest"


def test_export_round_trips_into_the_model() -> None:
    snap = fixed_store().snapshot()
    assert msgspec.json.decode(to_json(snap), type=Snapshot) == snap
