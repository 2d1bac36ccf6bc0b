"""How ``serve`` opens its operations engine, and the protocol's strictness about operations."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import get_args

import msgspec
import pytest
from tui_data import fill

from sovereign_tui.clock import FakeClock
from sovereign_tui.config import parse_settings
from sovereign_tui.daemon import protocol
from sovereign_tui.daemon.gateway import UNAVAILABLE, UnavailableGateway
from sovereign_tui.daemon.protocol import OperationRequest, QueryRequest
from sovereign_tui.daemon.roles import Identity
from sovereign_tui.daemon.serve import Daemon, open_engine
from sovereign_tui.daemon.settings import ServeSettings
from sovereign_tui.ops.plan import Step, StepKind, encode_plan, new_plan
from sovereign_tui.ops_gateway import ErrorKind
from sovereign_tui.store import Store

ROOT = Path(__file__).resolve().parents[2]

_DIE = """
import sys
from sovereign_tui.ops.journal import Journal
from sovereign_tui.ops.plan import decode_plan
j = Journal(sys.argv[1])
plan = decode_plan(open(sys.argv[2], 'rb').read())
j.create(plan, operator='ssh:alice', role='operator', now=1000.0)
j.step_started(plan.id, 0, 1001.0)
"""


async def test_an_engine_that_cannot_open_its_journal_leaves_operations_unavailable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the state directory should be")
    with caplog.at_level(logging.ERROR, logger="sovereign_tui.serve"):
        engine = open_engine(parse_settings(f'[ops]\nstate_dir = "{blocked}"\n'), Store(clock), clock)
    assert engine is None
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("operations unavailable (requests are refused): operations state:")
    assert str(blocked) in line and "\n" not in line
    daemon = Daemon(Store(clock), ServeSettings(ssh=False), audit=_NoAudit(), clock=clock, gateway=engine)
    gateway = daemon.feed_server._gateway
    assert isinstance(gateway, UnavailableGateway)
    who = Identity(operator="alice", role="operator", via="ssh")
    answer = await gateway.submit(who, OperationRequest(id="1", kind="drain", target="gpu-a01"))
    assert (answer.ok, answer.error) == (False, UNAVAILABLE)


async def test_the_engine_publishes_the_journal_operations_into_the_snapshots_at_once(tmp_path: Path) -> None:
    clock = FakeClock()
    store = Store(clock)
    fill(store, clock)
    step = Step(
        index=0, kind=StepKind.NOVA_DISABLE, target="svc-1", target_name="gpu-a01", description="disable"
    )
    plan = new_plan("drain", "gpu-a01", [step], now=1000.0, leases=["gpu-a01"])
    (tmp_path / "plan.json").write_bytes(encode_plan(plan))
    state = tmp_path / "state"
    state.mkdir()
    died = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _DIE, str(state / "operations.db"), str(tmp_path / "plan.json"), cwd=ROOT
    )
    assert await died.wait() == 0  # a daemon that died mid-drain
    engine = open_engine(parse_settings(f'[ops]\nstate_dir = "{state}"\n'), store, clock)
    assert engine is not None
    try:
        (op,) = store.snapshot().operations
        assert (op.id, op.kind, op.target, op.operator, op.state) == (
            plan.id,
            "drain",
            "gpu-a01",
            "ssh:alice",
            "interrupted",
        )
        assert (op.step, op.steps) == (1, 1)
    finally:
        await engine.close()


def test_the_protocol_spells_the_engine_error_kinds_and_refuses_what_it_does_not_know() -> None:
    assert get_args(protocol.ErrorKind) == get_args(ErrorKind)
    good = b'{"type":"query","id":"1","what":"recent","limit":5}'
    assert protocol.decode_client(good) == QueryRequest(id="1", what="recent", limit=5)
    for bad in (
        b'{"type":"query","id":"1","what":"everything"}',
        b'{"type":"query","id":"1","what":"recent","limit":0}',
        b'{"type":"query","id":"1","what":"recent","sql":"drop table"}',
        b'{"type":"operation","id":"1","kind":"drain","target":"h","digest":"not-a-digest"}',
        b'{"type":"operation","id":"1","kind":"provision","target":"h","provision":{"kind":"vm","name":"h","x":1}}',
        b'{"type":"operation","id":"1","kind":"format-disks","target":"h"}',
    ):
        with pytest.raises(msgspec.ValidationError):
            protocol.decode_client(bad)


class _NoAudit:
    def append(self, event: dict[str, object]) -> None:
        pass
