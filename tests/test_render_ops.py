"""The headless parts of the operations screens: the board that folds an operation's events into
progress, the confirmation of a batch, and which workload holds a GPU (on the `tui_data` cluster,
whose GPUs' holders are read from its workloads)."""

from __future__ import annotations

from tui_data import fill, fill_layers

from sovereign_tui.clock import FakeClock
from sovereign_tui.ops.executor import OpEvent
from sovereign_tui.ops.plan import Plan, Step, StepKind, new_plan
from sovereign_tui.ops_gateway import batch_phrase, confirmation_for
from sovereign_tui.ops_targets import gpu_holder, workload_ref
from sovereign_tui.render_ops import OperationBoard, bar, run_line
from sovereign_tui.store import Store


def test_the_board_folds_events_into_progress() -> None:
    steps = [
        Step(index=0, kind=StepKind.NOVA_DISABLE, target="svc", target_name="h", description="disable"),
        Step(index=0, kind=StepKind.NOVA_LIVE_MIGRATE, target="vm", target_name="vm-1", description="move"),
    ]
    plan = new_plan("drain", "h", steps, now=0.0, leases=["h"])
    board = OperationBoard()
    board.started(plan.id, plan)
    events = [
        ("operation-started", None, "running", None),
        ("step-started", 0, "started", None),
        ("step-finished", 0, "done", None),
        ("step-started", 1, "started", None),
        ("step-progress", 1, "started", 0.5),
    ]
    for at, (kind, step, state, fraction) in enumerate(events):
        board.apply(
            OpEvent(op_id=plan.id, kind=kind, at=float(at), step=step, state=state, fraction=fraction)
        )
    run = board.runs[plan.id]
    assert (run.state, run.current, run.finished_steps, run.fraction) == ("running", 1, 1, 0.75)
    assert "step 2 live-migrate vm-1" in run_line(run) and bar(0.75).endswith("75%")
    board.apply(OpEvent(op_id=plan.id, kind="step-finished", at=9.0, step=1, state="done"))
    board.apply(
        OpEvent(op_id=plan.id, kind="operation-finished", at=9.0, state="succeeded", message="2 steps")
    )
    assert run.over and run.current is None and run.fraction == 1.0 and run.done == 2
    board.refused("other", "held")
    assert board.refusals == {"other": "held"} and board.version == len(events) + 4


def test_a_batch_is_confirmed_by_every_destructive_name() -> None:
    def drain(host: str) -> Plan:
        step = Step(index=0, kind=StepKind.NOVA_DISABLE, target="s", target_name=host, description="d")
        return new_plan("drain", host, [step], now=0.0)

    plans = [drain("a"), drain("b")]
    assert batch_phrase(plans) == "a b"
    assert [confirmation_for(p, "b a") for p in plans] == ["a", "b"]
    assert confirmation_for(plans[0], "b") == "b"  # not its name: the engine refuses it


def test_every_held_gpu_is_traced_to_the_workload_holding_it() -> None:
    clock = FakeClock()
    store = Store(clock)
    fill(store, clock)
    fill_layers(store, clock)
    snap = store.snapshot()
    held = [g for g in snap.gpus if any(g.uuid in w.gpu_uuids for w in snap.workloads)]
    assert held
    for g in held:
        holder = gpu_holder(snap, g)
        assert holder is not None and g.uuid in holder.gpu_uuids
    free = [g for g in snap.gpus if not g.holder and not any(g.uuid in w.gpu_uuids for w in snap.workloads)]
    assert all(gpu_holder(snap, g) is None for g in free)
    pods = [w for w in snap.workloads if w.kind in ("pod", "kata-pod") and w.owner]
    assert pods and all(workload_ref(w) == f"{w.owner}/{w.name}" for w in pods)
