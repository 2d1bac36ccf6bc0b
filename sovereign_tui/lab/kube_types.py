"""The resource types the lab Kubernetes API serves, and its discovery documents."""

from __future__ import annotations

from typing import Any

from sovereign_tui.lab.kube_store import KubeStore, ResourceType, namespace_fields, node_fields, pod_fields

READ = ("get", "list", "watch")
NODES = ResourceType(
    "nodes", "Node", namespaced=False, fields=node_fields, short_names=("no",), verbs=(*READ, "patch")
)
PODS = ResourceType(
    "pods",
    "Pod",
    fields=pod_fields,
    index="spec.nodeName",
    short_names=("po",),
    verbs=(*READ, "create", "delete"),
)
NAMESPACES = ResourceType(
    "namespaces", "Namespace", namespaced=False, fields=namespace_fields, short_names=("ns",)
)
RUNTIME_CLASSES = ResourceType("runtimeclasses", "RuntimeClass", "node.k8s.io", namespaced=False)
PDBS = ResourceType("poddisruptionbudgets", "PodDisruptionBudget", "policy", short_names=("pdb",))
VMS = ResourceType(
    "virtualmachines",
    "VirtualMachine",
    "kubevirt.io",
    short_names=("vm", "vms"),
    verbs=(*READ, "create", "delete"),
)
VMIS = ResourceType(
    "virtualmachineinstances", "VirtualMachineInstance", "kubevirt.io", short_names=("vmi", "vmis")
)
MIGRATIONS = ResourceType(
    "virtualmachineinstancemigrations",
    "VirtualMachineInstanceMigration",
    "kubevirt.io",
    short_names=("vmim", "vmims"),
    verbs=(*READ, "create", "delete"),
)
ALL = (NODES, PODS, NAMESPACES, RUNTIME_CLASSES, PDBS, VMS, VMIS, MIGRATIONS)

SUBRESOURCES: dict[str, tuple[tuple[str, str, str, str, tuple[str, ...]], ...]] = {
    "v1": (("pods/eviction", "Eviction", "policy", "v1", ("create",)),),
}
"""Per group/version: (name, kind, group, version, verbs) of the subresources served."""

VERSION_INFO = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.4",
    "gitCommit": "a78aa47129b8539636eb86a9d00e31b2720fe06b",
    "gitTreeState": "clean",
    "buildDate": "2024-12-10T18:36:21Z",
    "goVersion": "go1.22.9",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def register_all(store: KubeStore) -> None:
    for rtype in ALL:
        store.register(rtype)


def groups() -> dict[str, list[ResourceType]]:
    """Resource types by API group ("" is the core group)."""
    out: dict[str, list[ResourceType]] = {}
    for rtype in ALL:
        out.setdefault(rtype.group, []).append(rtype)
    return out


def resource_list(group: str, version: str) -> dict[str, Any]:
    """The APIResourceList of /api/v1 or /apis/<group>/<version>."""
    gv = f"{group}/{version}" if group else version
    resources: list[dict[str, Any]] = []
    for rtype in groups().get(group, []):
        if rtype.version != version:
            continue
        r: dict[str, Any] = {
            "name": rtype.plural,
            "singularName": rtype.kind.lower(),
            "namespaced": rtype.namespaced,
            "kind": rtype.kind,
            "verbs": list(rtype.verbs),
        }
        if rtype.short_names:
            r["shortNames"] = list(rtype.short_names)
        resources.append(r)
    for name, kind, sgroup, sversion, verbs in SUBRESOURCES.get(gv, ()):
        resources.append(
            {
                "name": name,
                "singularName": "",
                "namespaced": True,
                "group": sgroup,
                "version": sversion,
                "kind": kind,
                "verbs": list(verbs),
            }
        )
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


def api_group(group: str) -> dict[str, Any]:
    versions = sorted({t.version for t in groups()[group]})
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": gvs,
        "preferredVersion": gvs[0],
    }


def api_group_list() -> dict[str, Any]:
    groups_ = [api_group(g) for g in groups() if g]
    for g in groups_:
        del g["kind"], g["apiVersion"]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups_}
