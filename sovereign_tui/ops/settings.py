"""The ``[ops]`` settings: who may act from the local command line, where the clouds are, and the
executor's limits. Every field has a default; the file in `sovereign_tui.config` embeds this."""

from __future__ import annotations

import msgspec

LAYERS = ("nova", "ironic", "kubernetes", "kubevirt", "starlingx")


class OpsSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    role: str = "operator"
    """Role of whoever runs the command-line verbs (``drain``, ``migrate``...) on this machine:
    viewer, operator or admin. The local user already holds the clouds' credentials, so this is
    a guard against mistakes, not a security boundary; the SSH console gives roles per key."""
    cloud: str | None = None
    """clouds.yaml cloud to act on; defaults to ``sources.nova.cloud``."""
    clouds_yaml: str | None = None
    """Path of clouds.yaml; defaults to ``sources.nova.clouds_yaml`` (then openstacksdk's search)."""
    region: str | None = None
    interface: str | None = None
    """Catalog interface (public, internal, admin); defaults to ``sources.nova.interface``."""
    kubeconfig: str | None = None
    """kubeconfig to act on Kubernetes and KubeVirt with; None uses the one the kubernetes source
    reads (``sources.kubernetes.kubeconfig``), else the client's own default (``$KUBECONFIG``,
    then ``~/.kube/config``). Without one those layers are skipped."""
    kube_context: str | None = None
    layers: tuple[str, ...] = LAYERS
    """Layers operations may act on; a layer left out is never touched (and said so in plans)."""
    live_migrations_per_host: int = 2
    """Most live migrations (Nova or KubeVirt) running at once off one host."""
    evictions_in_parallel: int = 4
    """Most pod evictions in flight at once during a drain."""
    poll_interval_s: float = 2.0
    """How often a running step asks its API for progress."""
    eviction_retry_s: float = 5.0
    """Wait before retrying an eviction that a disruption budget refused (kubectl's pace)."""
    step_timeout_s: float = 1800.0
    """Longest a step may take unless `step_timeouts` says otherwise."""
    step_timeouts: dict[str, float] = msgspec.field(default_factory=dict)
    """Per step kind (e.g. ``"nova.live-migrate" = 3600``)."""
    gpu_vm_policy: str = "cold"
    """Drain policy for VMs with passed-through GPUs or vGPUs, which cannot live-migrate:
    "cold" (cold-migrate them: the guest restarts) or "refuse" (list them as cannot move)."""
    state_dir: str | None = None
    """Where the operations journal (``operations.db``) and the audit log live; defaults to the
    XDG state directory (``~/.local/state/sovereign-tui``)."""
    audit_log: str | None = None
    """Path of the audit log; defaults to ``<state_dir>/audit.log``."""
    snapshot_timeout_s: float = 20.0
    """How long a command-line verb waits for the one poll its plan is computed from."""


def validate_ops(ops: OpsSettings, origin: object) -> str | None:
    """The first problem with the settings as one line, or None."""
    if ops.role not in ("viewer", "operator", "admin"):
        return f"{origin}: ops.role must be viewer, operator or admin, got {ops.role!r}"
    unknown = sorted(set(ops.layers) - set(LAYERS))
    if unknown:
        return f"{origin}: ops.layers has unknown layer(s) {unknown}; known: {list(LAYERS)}"
    if ops.live_migrations_per_host < 1 or ops.evictions_in_parallel < 1:
        return f"{origin}: ops.live_migrations_per_host and ops.evictions_in_parallel must be at least 1"
    for name in ("poll_interval_s", "eviction_retry_s", "step_timeout_s", "snapshot_timeout_s"):
        if getattr(ops, name) <= 0:
            return f"{origin}: ops.{name} must be positive"
    if any(v <= 0 for v in ops.step_timeouts.values()):
        return f"{origin}: ops.step_timeouts values must be positive"
    from sovereign_tui.ops.plan import StepKind

    kinds = {k.value for k in StepKind}
    bad = sorted(set(ops.step_timeouts) - kinds)
    if bad:
        return f"{origin}: ops.step_timeouts has unknown step kind(s) {bad}; known: {sorted(kinds)}"
    if ops.gpu_vm_policy not in ("cold", "refuse"):
        return f"{origin}: ops.gpu_vm_policy must be 'cold' or 'refuse', got {ops.gpu_vm_policy!r}"
    return None
