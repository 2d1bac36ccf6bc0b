"""The provision form: a Nova server from a GPU flavor, a bare-metal deploy, a Kata pod or a
KubeVirt VM. It offers only what can work now: the GPU flavors that fit on some hypervisor, the
Ironic nodes that are available, the Kata runtime classes present in the cluster. Ctrl+s (or
Enter in a field) shows the plan; the plan screen runs it."""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, Select, Static

from screens.plan import PlanScreen, operations_of
from sovereign_tui.model import EMPTY_SNAPSHOT, Snapshot
from sovereign_tui.ops.plan import Plan
from sovereign_tui.ops.provisioning import FlavorFit, ProvisionRequest
from sovereign_tui.ops_gateway import error_line
from sovereign_tui.ops_targets import available_nodes

KINDS: tuple[tuple[str, str], ...] = (
    ("Nova server from a GPU flavor", "vm"),
    ("Bare-metal deploy (Ironic)", "baremetal"),
    ("Kata pod (VM-isolated)", "kata-pod"),
    ("KubeVirt VM", "kubevirt-vm"),
)
_IMAGE_HINT = {
    "vm": "image id (Glance)",
    "baremetal": "image_source Ironic deploys (URL or Glance id)",
    "kata-pod": "container image",
    "kubevirt-vm": "containerDisk image",
}


def flavor_label(fit: FlavorFit) -> str:
    f = fit.flavor
    where = f"fits on {len(fit.hosts)} host(s)" if fit.known else "capacity not reported"
    return f"{f.name} · {fit.gpus} {fit.gpu_kind} GPU · {f.vcpus} vCPU {f.ram_mb // 1024} GiB · {where}"


class ChoicesLoaded(Message):
    def __init__(self, flavors: list[FlavorFit], classes: list[str], problems: list[str]) -> None:
        super().__init__()
        self.flavors = flavors
        self.classes = classes
        self.problems = problems


class ProvisionScreen(ModalScreen[None]):
    TITLE = "Provision"
    BINDING_GROUP_TITLE = "Provision"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "plan_provision", "Plan", id="plan-provision", tooltip="Show the provision's plan"),
        Binding("escape", "dismiss", "Close", id="close-provision"),
    ]
    DEFAULT_CSS = """
    ProvisionScreen {
        align: center middle;
        & > Vertical {
            width: 100%; max-width: 110; height: auto; max-height: 100%; background: $surface; padding: 0 1;
        }
        & #provision-title { text-style: bold; background: $panel; margin: 0 -1 1 -1; padding: 0 1; }
        & .field { height: 1; margin: 0 0 1 0; }
        & .field > Label { width: 16; }
        & .field > Select, & .field > Input { width: 1fr; }
        & #provision-error { color: $text-error; text-style: bold; height: auto; }
        & #provision-buttons { height: 1; margin: 0 0 1 0; }
    }
    """

    def __init__(self, kind: str = "vm", node: str | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.node = node
        self.flavors: list[FlavorFit] = []

    @property
    def snapshot(self) -> Snapshot:
        snap = getattr(self.app, "snapshot", None)
        return snap if isinstance(snap, Snapshot) else EMPTY_SNAPSHOT

    def compose(self) -> ComposeResult:
        nodes = available_nodes(self.snapshot)
        if self.node is not None and self.node not in nodes:
            nodes.insert(0, self.node)  # its plan will say why it cannot be deployed
        with Vertical():
            yield Static(Content("Provision a GPU workload"), id="provision-title")
            yield from self._field(
                "Kind", "", Select(KINDS, value=self.kind, allow_blank=False, compact=True, id="kind")
            )
            yield from self._field(
                "Name", "", Input(placeholder="the new workload's name", compact=True, id="name")
            )
            yield from self._field(
                "Flavor",
                "vm",
                Select([], prompt="loading the GPU flavors that fit...", compact=True, id="flavor"),
            )
            yield from self._field(
                "Node",
                "baremetal",
                Select(
                    [(n, n) for n in nodes],
                    prompt="no available node" if not nodes else "choose a node",
                    value=self.node if self.node is not None else Select.NULL,
                    compact=True,
                    id="node",
                ),
            )
            yield from self._field("Image", "", Input(compact=True, id="image"))
            yield from self._field("Network", "vm", Input(value="auto", compact=True, id="network"))
            yield from self._field(
                "Namespace", "kata-pod kubevirt-vm", Input(value="default", compact=True, id="namespace")
            )
            yield from self._field(
                "Runtime class",
                "kata-pod",
                Select([], prompt="loading Kata runtime classes...", compact=True, id="runtime-class"),
            )
            yield from self._field(
                "Cores", "kubevirt-vm", Input(value="2", type="integer", compact=True, id="cores")
            )
            yield from self._field("Memory", "kubevirt-vm", Input(value="4Gi", compact=True, id="memory"))
            yield from self._field(
                "GPUs", "kata-pod kubevirt-vm", Input(value="0", type="integer", compact=True, id="gpus")
            )
            yield Static(id="provision-error")
            with Horizontal(id="provision-buttons"):
                yield Button("Plan", id="plan", compact=True)
            yield Footer(compact=True, show_command_palette=False)

    def _field(self, label: str, kinds: str, widget: Select[str] | Input) -> ComposeResult:
        classes = "field " + " ".join(f"k-{k}" for k in kinds.split()) if kinds else "field"
        with Horizontal(classes=classes):
            yield Label(label)
            yield widget

    def on_mount(self) -> None:
        self._show_kind()
        self.query_one("#name", Input).focus()
        self._load_choices()

    def _show_kind(self) -> None:
        for row in self.query(".field").results(Horizontal):
            kinds = [c[2:] for c in row.classes if c.startswith("k-")]
            row.display = not kinds or self.kind in kinds
        self.query_one("#image", Input).placeholder = _IMAGE_HINT.get(self.kind, "image")

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "kind" and isinstance(event.value, str):
            self.kind = event.value
            self._show_kind()

    @work(exclusive=True, group="choices", name="load-choices")
    async def _load_choices(self) -> None:
        ctx = operations_of(self.app)
        if ctx is None:
            return
        flavors: list[FlavorFit] = []
        classes: list[str] = []
        problems: list[str] = []
        try:
            flavors = await ctx[0].offered_flavors(self.snapshot)
        except Exception as exc:
            problems.append(f"GPU flavors: {error_line(exc)}")
        try:
            classes = await ctx[0].kata_runtime_classes()
        except Exception as exc:
            problems.append(f"Kata runtime classes: {error_line(exc)}")
        self.post_message(ChoicesLoaded(flavors, classes, problems))

    def on_choices_loaded(self, message: ChoicesLoaded) -> None:
        self.flavors = message.flavors
        flavor = self.query_one("#flavor", Select)
        flavor.set_options((flavor_label(f), f.flavor.name) for f in message.flavors)
        flavor.prompt = (
            "choose a GPU flavor" if message.flavors else "no GPU flavor fits on any hypervisor now"
        )
        rc = self.query_one("#runtime-class", Select)
        rc.set_options((c, c) for c in message.classes)
        rc.prompt = "the default Kata class" if message.classes else "no Kata runtime class in the cluster"
        self._error(" · ".join(message.problems))

    def _error(self, text: str) -> None:
        self.query_one("#provision-error", Static).update(Content(text))

    def _value(self, widget_id: str) -> str:
        return self.query_one(f"#{widget_id}", Input).value.strip()

    def _choice(self, widget_id: str) -> str | None:
        value = self.query_one(f"#{widget_id}", Select).value
        return value if isinstance(value, str) else None

    def request(self) -> ProvisionRequest | str:
        """The request the form describes, or what is missing (one line)."""
        kind, name, image = self.kind, self._value("name"), self._value("image")
        if not name:
            return "give the new workload a name"
        need = {"vm": "flavor", "baremetal": "node"}.get(kind)
        if need is not None and self._choice(need) is None:
            return f"choose a {need}"
        if not image:
            return f"give the {_IMAGE_HINT.get(kind, 'image')}"
        numbers = {k: self._value(k) or "0" for k in ("gpus", "cores")}
        if not all(v.isdigit() for v in numbers.values()):
            return "GPUs and cores are whole numbers"
        return ProvisionRequest(
            kind=kind,
            name=name,
            flavor=self._choice("flavor") if kind == "vm" else None,
            image=image,
            network=self._value("network") or "auto",
            node=self._choice("node") if kind == "baremetal" else None,
            namespace=self._value("namespace") or "default",
            runtime_class=self._choice("runtime-class") if kind == "kata-pod" else None,
            gpus=int(numbers["gpus"]),
            cores=max(int(numbers["cores"]), 1),
            memory=self._value("memory") or "4Gi",
        )

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_plan_provision()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_plan_provision()

    def action_plan_provision(self) -> None:
        ctx = operations_of(self.app)
        req = self.request()
        if isinstance(req, str):
            self._error(req)
            return
        if ctx is None:
            return
        backend, snapshot = ctx[0], self.snapshot

        async def planner() -> list[Plan]:
            return [await backend.plan_provision(snapshot, req)]

        label = dict((v, k) for k, v in KINDS).get(req.kind, req.kind)
        self.dismiss()
        self.app.push_screen(PlanScreen(f"Provision {req.name}: {label}", planner))
