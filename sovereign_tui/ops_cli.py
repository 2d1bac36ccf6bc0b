"""The operations verbs of the command line: drain, undrain, migrate, provision, provide, undeploy,
operations, audit.

    sovereign-tui drain HOST [--dry-run] [--yes] [--json] [--continue-on-failure] [--force]
    sovereign-tui undrain HOST
    sovereign-tui migrate WORKLOAD [--to HOST] [--cold]
    sovereign-tui provision (vm|baremetal|kata-pod|kubevirt-vm) NAME [--flavor F --image I ...]
    sovereign-tui provide NODE      (an Ironic node: manageable -> available)
    sovereign-tui undeploy NODE     (an Ironic node: active -> available; its instance is destroyed)
    sovereign-tui operations [list | resume ID | abandon ID]
    sovereign-tui audit verify [PATH]

Each verb polls the configured OpenStack sources once, computes the plan and prints it (a table,
or JSON with --json) on stdout; --dry-run stops there. Otherwise it asks for confirmation on the
terminal (a destructive plan wants the host's name typed, others y/N) unless --yes, runs the plan
with progress on stderr, and exits 0 when every step is done. Ctrl-C cancels the operation
(running migrations are aborted); a second Ctrl-C leaves at once and the journal keeps it as
interrupted, to resume or abandon with ``sovereign-tui operations``.

Who acts: the OS user (or ``--operator NAME``), with the role in the settings' ``ops.role``
(operator by default). Exit status: 0 done, 1 the operation failed or was cancelled, 2 a usage,
settings or planning error, 3 refused (role, lease held, not confirmed).

Only argparse is imported at module level: the SDKs load when a verb runs.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from sovereign_tui.config import Settings
    from sovereign_tui.ops.engine import Operations
    from sovereign_tui.ops.executor import OpEvent
    from sovereign_tui.ops.plan import Plan

COMMANDS = ("drain", "undrain", "migrate", "provision", "provide", "undeploy", "operations", "audit")
EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED = 1, 2, 3


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the verbs to the main parser's subcommands (`sub`), sharing its --config option."""
    run_opts = argparse.ArgumentParser(add_help=False)
    run_opts.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    run_opts.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    run_opts.add_argument("--json", action="store_true", help="print the plan (and the result) as JSON")
    run_opts.add_argument(
        "--continue-on-failure", action="store_true", help="try every step even after one fails"
    )
    run_opts.add_argument("--operator", metavar="NAME", help="who acts (default: the OS user)")
    parents = [common, run_opts]

    drain = sub.add_parser(
        "drain",
        parents=parents,
        help="empty a host across every layer",
        description="Disable Nova's compute service, move the VMs, cordon the Kubernetes node and evict "
        "its pods, migrate KubeVirt VMs, set Ironic maintenance, lock the StarlingX host.",
    )
    drain.add_argument("host")
    drain.add_argument("--force", action="store_true", help="StarlingX force-lock (admin only)")
    undrain = sub.add_parser(
        "undrain",
        parents=parents,
        help="put a drained host back in service",
        description="Unlock the StarlingX host, unset Ironic maintenance, uncordon, enable nova-compute.",
    )
    undrain.add_argument("host")
    migrate = sub.add_parser(
        "migrate",
        parents=parents,
        help="move one workload to another host",
        description="Nova live (or cold) migration, KubeVirt live migration, or pod eviction. WORKLOAD "
        "is a server's name or id, or NAMESPACE/NAME for a KubeVirt VM or a pod.",
    )
    migrate.add_argument("workload")
    migrate.add_argument("--to", metavar="HOST", help="destination (default: the scheduler chooses)")
    migrate.add_argument("--cold", action="store_true", help="cold-migrate a Nova server (it restarts)")
    prov = sub.add_parser(
        "provision",
        parents=parents,
        help="create a GPU workload",
        description="A Nova server from a GPU flavor, an Ironic deploy, a Kata pod or a KubeVirt VM.",
    )
    prov.add_argument("kind", choices=("vm", "baremetal", "kata-pod", "kubevirt-vm"))
    prov.add_argument("name", help="the new workload's name (the instance's host name for baremetal)")
    prov.add_argument("--flavor", help="vm: GPU flavor name or id (only flavors that fit are accepted)")
    prov.add_argument("--image", help="vm: image id; baremetal: image_source; pods and VMs: image")
    prov.add_argument("--network", default="auto", help="vm: auto, none or a network id (default auto)")
    prov.add_argument("--host", help="vm: put it on this hypervisor (admin)")
    prov.add_argument("--node", help="baremetal: the Ironic node's name or uuid")
    prov.add_argument("--namespace", default="default", help="kata-pod, kubevirt-vm: namespace")
    prov.add_argument("--runtime-class", help="kata-pod: one of the cluster's Kata runtime classes")
    prov.add_argument("--gpus", type=int, default=0, help="kata-pod, kubevirt-vm: GPUs to request")
    prov.add_argument("--cores", type=int, default=2, help="kubevirt-vm: virtual CPU cores")
    prov.add_argument("--memory", default="4Gi", help="kubevirt-vm: guest memory")
    provide = sub.add_parser(
        "provide",
        parents=parents,
        help="make a bare-metal node available (manageable -> available)",
        description="Ironic's provide, through cleaning when Ironic cleans automatically; a node in "
        "enroll (or a failed clean, inspection or adoption) is managed first.",
    )
    provide.add_argument("node", help="the Ironic node's name or uuid")
    undeploy = sub.add_parser(
        "undeploy",
        parents=parents,
        help="take a bare-metal node's instance down (active -> available)",
        description="Ironic's undeploy (target deleted): the instance is destroyed and the node goes "
        "through deleting and cleaning back to available. Confirmed by typing the node's name.",
    )
    undeploy.add_argument("node", help="the Ironic node's name or uuid")

    ops = sub.add_parser(
        "operations",
        parents=[common],
        help="list, resume or abandon operations",
        description="List recent operations (interrupted ones first), resume one from the step it "
        "reached, or abandon it (admin) to release its hosts.",
    )
    ops.add_argument("action", nargs="?", choices=("list", "resume", "abandon"), default="list")
    ops.add_argument("id", nargs="?", help="operation id (a unique prefix will do)")
    ops.add_argument("--json", action="store_true", help="print as JSON")
    ops.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    ops.add_argument("--operator", metavar="NAME", help="who acts (default: the OS user)")
    audit = sub.add_parser(
        "audit",
        parents=[common],
        help="check the audit log",
        description="Verify the audit log's hash chain and head pointer: any edit, insertion, deletion "
        "or cut tail is reported with its line.",
    )
    audit.add_argument("action", choices=("verify",))
    audit.add_argument("path", nargs="?", help="audit log (default: ops.audit_log or the state directory's)")


def run(
    args: argparse.Namespace, settings: Settings, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run one verb (after argparse and the settings); returns the exit status."""
    from sovereign_tui.cli import run_async

    cli = _Cli(args, settings, out or sys.stdout, err or sys.stderr)
    if args.command == "audit":
        return cli.audit()
    return run_async(cli.main)


class _Cli:
    def __init__(self, args: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO) -> None:
        self.args, self.settings, self.out, self.err = args, settings, out, err

    def say(self, line: str) -> None:
        print(line, file=self.err, flush=True)

    @property
    def actor_name(self) -> str:
        return str(getattr(self.args, "operator", None) or _os_user())

    def audit(self) -> int:
        from sovereign_tui.config import state_home
        from sovereign_tui.ops.audit import verify

        ops = self.settings.ops
        path = self.args.path or ops.audit_log or os.path.join(ops.state_dir or state_home(), "audit.log")
        report = verify(path)
        print(report.summary, file=self.out)
        for problem in report.problems[1:]:
            print(f"  also: {problem}", file=self.out)
        return 0 if report.ok else EXIT_FAILED

    async def main(self) -> int:
        from sovereign_tui.ops.actions.base import LayerUnavailable
        from sovereign_tui.ops.audit import AuditError
        from sovereign_tui.ops.engine import Actor, ConfirmationRequired, Operations
        from sovereign_tui.ops.journal import JournalError
        from sovereign_tui.ops.leases import LeaseHeld
        from sovereign_tui.ops.plan_context import PlanError
        from sovereign_tui.ops.roles import PermissionDenied

        try:
            ops = Operations.from_settings(self.settings)
        except (JournalError, OSError) as exc:
            self.say(str(exc))
            return EXIT_USAGE
        actor = Actor(self.actor_name, self.settings.ops.role)
        try:
            if self.args.command == "operations":
                return await self.operations(ops, actor)
            self.warn_interrupted(ops)
            plan = await self.plan(ops)
            self.show_plan(plan)
            if self.args.dry_run:
                if self.args.json:
                    import msgspec

                    self.out.write(msgspec.json.encode(plan_doc(plan)).decode() + "\n")
                return 0
            return await self.execute(ops, actor, plan)
        except (PlanError, LayerUnavailable) as exc:
            self.say(f"{self.args.command}: {exc}")
            return EXIT_USAGE
        except (PermissionDenied, LeaseHeld, ConfirmationRequired) as exc:
            self.say(f"{self.args.command}: refused: {exc}")
            return EXIT_REFUSED
        except (JournalError, AuditError) as exc:
            self.say(f"{self.args.command}: {exc}")
            return EXIT_FAILED
        finally:
            await ops.close()

    # --- planning --------------------------------------------------------------------------------

    async def snapshot(self) -> Any:
        from sovereign_tui.runtime import Runtime, openstack_collectors

        runtime = Runtime(self.settings, collectors=openstack_collectors(self.settings))
        try:
            snap = await runtime.first_poll(self.settings.ops.snapshot_timeout_s)
        finally:
            await runtime.close()
        for health in snap.sources:
            if health.up is not True:
                self.say(
                    f"warning: source {health.target} is down ({health.last_error}); the plan lacks its layer"
                )
        return snap

    async def plan(self, ops: Operations) -> Plan:
        from sovereign_tui.ops.provisioning import ProvisionRequest

        a = self.args
        snap = await self.snapshot()
        if a.command == "drain":
            return await ops.plan_drain(snap, a.host, force=a.force)
        if a.command == "undrain":
            return await ops.plan_undrain(snap, a.host)
        if a.command == "migrate":
            return await ops.plan_migrate(snap, a.workload, to=a.to, cold=a.cold)
        if a.command in ("provide", "undeploy"):
            return await ops.plan_node(snap, a.command, a.node)
        req = ProvisionRequest(
            kind=a.kind,
            name=a.name,
            flavor=a.flavor,
            image=a.image,
            network=a.network,
            host=a.host,
            node=a.node,
            namespace=a.namespace,
            runtime_class=a.runtime_class,
            gpus=a.gpus,
            cores=a.cores,
            memory=a.memory,
        )
        return await ops.plan_provision(snap, req)

    def show_plan(self, plan: Plan) -> None:
        from sovereign_tui.ops.plan import plan_rows

        if self.args.json:
            return  # printed with the result (or alone for a dry run, below)
        ident = f"plan {plan.id[:8]}, digest {plan.digest()[:12]}"
        print(f"{plan.kind} {plan.target}: {len(plan.steps)} steps ({ident})", file=self.out)
        print(format_table(plan_rows(plan)), file=self.out)
        for w in plan.warnings:
            print(f"warning: {w}", file=self.out)
        self.out.flush()

    # --- running ---------------------------------------------------------------------------------

    async def execute(self, ops: Operations, actor: Any, plan: Plan) -> int:
        ops.check(actor, plan.kind, plan.target, plan.digest())  # before asking anyone to type
        confirmation = self.confirm(plan)
        if confirmation is False:
            self.say("not confirmed: nothing was done")
            return EXIT_REFUSED
        run = await ops.start(
            plan,
            actor,
            confirmation=plan.confirm_phrase if confirmation is True else confirmation,
            continue_on_failure=self.args.continue_on_failure,
            force=bool(getattr(self.args, "force", False)),
        )
        return await self.follow(run, plan)

    def confirm(self, plan: Plan) -> str | bool:
        """True when --yes, the typed phrase, or False when declined."""
        if self.args.yes:
            return True
        if not sys.stdin.isatty():
            self.say("confirmation needed: run on a terminal or pass --yes")
            return False
        phrase = plan.confirm_phrase
        if phrase is not None:
            self.err.write(f"This plan is destructive. Type the name {phrase} to run it: ")
            self.err.flush()
            answer = sys.stdin.readline().strip()
            return answer if answer == phrase else False
        self.err.write("Run it? [y/N] ")
        self.err.flush()
        return sys.stdin.readline().strip().lower() in ("y", "yes")

    async def follow(self, run: Any, plan: Plan) -> int:
        import asyncio
        import signal

        loop = asyncio.get_running_loop()
        interrupts = 0

        def on_sigint() -> None:
            nonlocal interrupts
            interrupts += 1
            if interrupts == 1:
                self.say("cancelling: running steps are stopped and cleaned up (Ctrl-C again to leave now)")
                run.cancel()
            else:
                os._exit(130)

        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, on_sigint)
        try:
            async for event in run.events():
                self.say(progress_line(event, plan))
            result = await run.wait()
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
        if self.args.json:
            import msgspec

            doc = {
                "plan": plan_doc(plan),
                "result": {
                    "state": result.state,
                    "message": result.message,
                    "steps": [vars(s) for s in result.steps],
                },
            }
            self.out.write(msgspec.json.encode(doc).decode() + "\n")
        return 0 if result.ok else EXIT_FAILED

    # --- operations --------------------------------------------------------------------------------

    def warn_interrupted(self, ops: Operations) -> None:
        for rec in ops.interrupted():
            reached = rec.step_reached
            at = f"step {reached.index + 1} of {len(rec.steps)}" if reached else "its end"
            self.say(
                f"warning: operation {rec.id[:8]} ({rec.kind} {rec.target} by {rec.operator}) was "
                f"interrupted at {at}; `sovereign-tui operations resume {rec.id[:8]}` or "
                f"`... abandon {rec.id[:8]}`"
            )

    async def operations(self, ops: Operations, actor: Any) -> int:
        a = self.args
        if a.action == "list":
            return self.list_operations(ops)
        if not a.id:
            self.say(f"operations {a.action}: give the operation's id (see `sovereign-tui operations`)")
            return EXIT_USAGE
        if a.action == "abandon":
            rec = ops.abandon(a.id, actor)
            self.say(f"operation {rec.id[:8]} abandoned: {rec.message}; its hosts are released")
            return 0
        rec = ops.journal.get(a.id)
        reached = rec.step_reached
        self.say(
            f"resuming {rec.kind} {rec.target} ({rec.id[:8]}) from step "
            f"{(reached.index + 1) if reached else '?'} of {len(rec.steps)}; "
            f"{rec.done_count} steps already done are skipped"
        )
        if not a.yes and self.confirm(rec.plan) is False:
            self.say("not confirmed: nothing was done")
            return EXIT_REFUSED
        run = await ops.resume(rec.id, actor)
        return await self.follow(run, rec.plan)

    def list_operations(self, ops: Operations) -> int:
        from sovereign_tui.ops.engine import as_model

        recs = ops.interrupted() + [r for r in ops.recent() if not r.interrupted]
        if self.args.json:
            import msgspec

            self.out.write(msgspec.json.encode([as_model(r) for r in recs]).decode() + "\n")
            return 0
        rows = []
        for r in recs:
            m = as_model(r)
            rows.append(
                {
                    "id": r.id[:8],
                    "kind": r.kind,
                    "target": r.target,
                    "state": m.state,
                    "step": f"{m.step}/{m.steps}",
                    "operator": r.operator,
                    "message": r.message or "",
                }
            )
        print(format_table(rows) if rows else "no operations in the journal", file=self.out)
        return 0


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"


def plan_doc(plan: Plan) -> dict[str, Any]:
    import msgspec

    doc: dict[str, Any] = msgspec.to_builtins(plan)
    doc["digest"] = plan.digest()
    doc["destructive"] = plan.destructive
    doc["confirm_phrase"] = plan.confirm_phrase
    return doc


def progress_line(event: OpEvent, plan: Plan) -> str:
    n = len(plan.steps)
    if event.step is None:
        return f"{plan.kind} {plan.target}: {event.state}: {event.message or ''}".rstrip(": ")
    step = plan.steps[event.step]
    head = f"[{event.step + 1}/{n}] {step.kind.value} {step.target_name}"
    if event.kind == "step-progress":
        pct = f" ({event.fraction:.0%})" if event.fraction is not None else ""
        return f"{head}: {event.message}{pct}"
    return f"{head}: {event.state}{': ' + event.message if event.message else ''}"


def format_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    width = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    lines = ["  ".join(c.upper().ljust(width[c]) for c in cols).rstrip()]
    lines += ["  ".join(r[c].ljust(width[c]) for c in cols).rstrip() for r in rows]
    return "\n".join(lines)
