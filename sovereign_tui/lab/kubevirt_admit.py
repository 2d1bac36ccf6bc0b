"""What the lab's API server and KubeVirt's webhooks make of a VirtualMachine sent by `POST`.

The API server's schema wants a valid name and `spec.template` with its `spec.domain` and
`devices` (422 Invalid, a cause per missing field, as `VirtualMachine.kubevirt.io "x" is invalid:
...`); virt-api's validating webhook wants some memory, at most one of `running` and
`runStrategy`, a known run strategy and named GPUs (422 with its causes joined); its mutating
webhook defaults the run strategy (Halted), the architecture and the machine type. Also the
readers of a VM's spec the lab's KubeVirt shares.
"""

from __future__ import annotations

import re

from sovereign_tui.lab import kube_objects as ko
from sovereign_tui.lab.kube_store import KubeError, Obj

RUN_STRATEGIES = ("Always", "Halted", "Manual", "RerunOnFailure", "Once")
VM_WEBHOOK = 'admission webhook "virtualmachine-validator.kubevirt.io" denied the request: '
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAME_RULE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)


# --- reading a VM's spec --------------------------------------------------------------------------


def run_strategy(vm_spec: Obj) -> str:
    """The VM's run strategy: `runStrategy`, else what the deprecated `running` means."""
    if vm_spec.get("runStrategy"):
        return str(vm_spec["runStrategy"])
    return "Always" if vm_spec.get("running") else "Halted"


def guest_memory(domain: Obj) -> str:
    memory = (domain.get("memory") or {}).get("guest")
    return str(memory or ((domain.get("resources") or {}).get("requests") or {}).get("memory") or "1Gi")


def guest_cores(domain: Obj) -> int:
    return int((domain.get("cpu") or {}).get("cores") or 1)


def gpu_devices(domain: Obj) -> list[str]:
    """The `deviceName` of each GPU the domain asks for."""
    return [str(g.get("deviceName") or ko.GPU) for g in (domain.get("devices") or {}).get("gpus") or []]


# --- admission ------------------------------------------------------------------------------------


def _cause(reason: str, message: str, field: str) -> Obj:
    return {"reason": reason, "message": message, "field": field}


def _invalid(name: str, causes: list[Obj]) -> KubeError:
    """The API server's 422 for an object its schema refuses, every cause listed."""
    parts = [f"{c['field']}: {c['message']}" for c in causes]
    text = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details = {"name": name, "group": "kubevirt.io", "kind": "VirtualMachine", "causes": causes}
    return KubeError(422, "Invalid", f'VirtualMachine.kubevirt.io "{name}" is invalid: {text}', details)


def _denied(causes: list[Obj]) -> KubeError:
    """virt-api's validating webhook saying no (its causes joined, as KubeVirt does)."""
    return KubeError(422, "Invalid", VM_WEBHOOK + ", ".join(c["message"] for c in causes), {"causes": causes})


def admit(ns: str, body: Obj, name: str) -> Obj:
    """The VM to store for `body`, or the 400/422 the API server or KubeVirt's webhook answers."""
    md = body.get("metadata") or {}
    if md.get("namespace") not in (None, "", ns):
        raise KubeError(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
        )
    if not name:
        raise _invalid(
            "",
            [
                _cause(
                    "FieldValueRequired", "Required value: name or generateName is required", "metadata.name"
                )
            ],
        )
    if len(name) > 253 or not _NAME.fullmatch(name):
        raise _invalid(
            name, [_cause("FieldValueInvalid", f'Invalid value: "{name}": {_NAME_RULE}', "metadata.name")]
        )
    spec = body.get("spec")
    missing: list[str] = []
    template: Obj = {}
    if not isinstance(spec, dict):
        missing.append("spec")
    elif not isinstance(spec.get("template"), dict):
        missing.append("spec.template")
    else:
        template = spec["template"]
        if not isinstance(template.get("spec"), dict):
            missing.append("spec.template.spec")
        elif not isinstance(template["spec"].get("domain"), dict):
            missing.append("spec.template.spec.domain")
        elif not isinstance(template["spec"]["domain"].get("devices"), dict):
            missing.append("spec.template.spec.domain.devices")
    if missing:
        raise _invalid(name, [_cause("FieldValueRequired", "Required value", f) for f in missing])
    assert isinstance(spec, dict)
    causes = _webhook_causes(spec)
    if causes:
        raise _denied(causes)
    kept = {k: md[k] for k in ("labels", "annotations", "generateName") if md.get(k)}
    vm_spec = {**spec, "template": {**template, "spec": dict(template["spec"])}}
    if "running" not in vm_spec and "runStrategy" not in vm_spec:
        vm_spec["runStrategy"] = "Halted"  # virt-api's mutating webhook defaults it
    vmi_spec = vm_spec["template"]["spec"]
    vmi_spec.setdefault("architecture", "amd64")  # and the template's machine and architecture
    vmi_spec["domain"] = {"machine": {"type": "q35"}, **vmi_spec["domain"]}
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {**kept, "name": name, "namespace": ns},
        "spec": vm_spec,
    }


def _webhook_causes(spec: Obj) -> list[Obj]:
    causes = []
    domain = spec["template"]["spec"]["domain"]
    memory = domain.get("memory") or {}
    requests = (domain.get("resources") or {}).get("requests") or {}
    if not memory.get("guest") and not memory.get("hugepages") and not requests.get("memory"):
        field = "spec.template.spec.domain"
        causes.append(
            _cause(
                "FieldValueRequired",
                f"no memory requested, at least one of '{field}.memory.guest', "
                f"'{field}.memory.hugepages.size' or '{field}.resources.requests.memory' must be set",
                "",
            )
        )
    if spec.get("running") is not None and spec.get("runStrategy") is not None:
        causes.append(
            _cause(
                "FieldValueInvalid",
                "Running and RunStrategy are mutually exclusive. Note that Running is deprecated, "
                "please use RunStrategy instead",
                "spec.running",
            )
        )
    strategy = spec.get("runStrategy")
    if strategy is not None and strategy not in RUN_STRATEGIES:
        causes.append(_cause("FieldValueInvalid", f"Invalid RunStrategy ({strategy})", "spec.runStrategy"))
    for i, gpu in enumerate(domain["devices"].get("gpus") or []):
        if not isinstance(gpu, dict) or not gpu.get("name") or not gpu.get("deviceName"):
            field = f"spec.template.spec.domain.devices.gpus[{i}]"
            causes.append(_cause("FieldValueRequired", f"{field} must have a name and a deviceName", field))
    return causes


__all__ = ["RUN_STRATEGIES", "admit", "gpu_devices", "guest_cores", "guest_memory", "run_strategy"]
