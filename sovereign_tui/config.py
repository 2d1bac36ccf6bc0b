"""Settings: one TOML file, every field documented where it is declared, every one defaulted.

The file is ``$XDG_CONFIG_HOME/sovereign-tui/sovereign.toml`` (``~/.config/...``), or the path
given by ``--config`` or ``SOVEREIGN_TUI_CONFIG``. OpenStack clouds come from ``clouds.yaml`` and
Kubernetes from kubeconfig through their own loaders; this file only says which to use.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from sovereign_tui.config_sources import (
    ConfigError,
    DcgmSource,
    KataSource,
    KubernetesSource,
    KubevirtSource,
    NvidiaSmiSource,
    PrometheusSource,
    validate_dcgm,
    validate_kube,
    validate_nvidia_smi,
)
from sovereign_tui.daemon.settings import ServeSettings
from sovereign_tui.daemon.settings import validate as validate_serve
from sovereign_tui.ops.settings import OpsSettings, validate_ops

__all__ = ["ConfigError", "Settings", "load_settings", "parse_settings"]


class _Base(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    pass


class PollerSettings(_Base, frozen=True):
    concurrency: int = 256
    """Most polls in flight at once, over every source."""
    per_host: int = 8
    """Most polls in flight at once against one endpoint host."""
    stale_after_intervals: float = 3.0
    """A target's data is shown stale when no poll succeeded for this many intervals."""
    backoff_cap_s: float = 300.0
    """Longest wait between attempts at a failing target."""


class HostSource(_Base, frozen=True):
    enabled: bool = True
    """Poll the health of the machine the app runs on (psutil)."""
    interval_s: float = 5.0
    name: str | None = None
    """Host name to file the machine under; defaults to the system's host name."""


class NvmlSource(_Base, frozen=True):
    enabled: bool = True
    """Poll this machine's GPUs through NVML. A machine without a driver shows the source down."""
    interval_s: float = 2.0
    library: str | None = None
    """Path of ``libnvidia-ml.so.1`` when it is not on the loader's path."""
    host: str | None = None
    """Host name the GPUs are filed under; defaults to the system's host name."""


class OpenStackSource(_Base, frozen=True):
    enabled: bool = False
    """Poll this OpenStack service. Off until a cloud is configured."""
    cloud: str = "sovereign-lab"
    """Cloud name in clouds.yaml."""
    clouds_yaml: str | None = None
    """Path of clouds.yaml; by default openstacksdk's own search (./, ~/.config/openstack, /etc)."""
    region: str | None = None
    interface: str = "public"
    """Catalog interface to use: public, internal or admin."""
    interval_s: float = 15.0


class Sources(_Base, frozen=True):
    host: HostSource = msgspec.field(default_factory=HostSource)
    nvml: NvmlSource = msgspec.field(default_factory=NvmlSource)
    nova: OpenStackSource = msgspec.field(default_factory=OpenStackSource)
    ironic: OpenStackSource = msgspec.field(default_factory=OpenStackSource)
    placement: OpenStackSource = msgspec.field(default_factory=OpenStackSource)
    """Placement: which Nova server holds which GPU (PCI-in-Placement and vGPU providers)."""
    starlingx: OpenStackSource = msgspec.field(default_factory=lambda: OpenStackSource(interval_s=30.0))
    """StarlingX sysinv, dcmanager and fm, found through the same cloud's Keystone catalog."""
    kubernetes: KubernetesSource = msgspec.field(default_factory=KubernetesSource)
    kubevirt: KubevirtSource = msgspec.field(default_factory=KubevirtSource)
    kata: KataSource = msgspec.field(default_factory=KataSource)
    nvidia_smi: NvidiaSmiSource = msgspec.field(default_factory=NvidiaSmiSource)
    dcgm: DcgmSource = msgspec.field(default_factory=DcgmSource)
    prometheus: PrometheusSource = msgspec.field(default_factory=PrometheusSource)


class ExportSettings(_Base, frozen=True):
    first_poll_timeout_s: float = 10.0
    """How long ``export`` waits for the first complete poll before printing what it has."""


class Settings(_Base, frozen=True):
    poller: PollerSettings = msgspec.field(default_factory=PollerSettings)
    sources: Sources = msgspec.field(default_factory=Sources)
    export: ExportSettings = msgspec.field(default_factory=ExportSettings)
    serve: ServeSettings = msgspec.field(default_factory=ServeSettings)
    """The appliance daemon: feed socket, SSH console, metrics; see `sovereign_tui.daemon.settings`."""
    ops: OpsSettings = msgspec.field(default_factory=OpsSettings)
    """Operations (drain, migrate, provision): roles, targets, limits; see `sovereign_tui.ops.settings`."""


def config_home() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "sovereign-tui"


def state_home() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "sovereign-tui"


def default_config_path() -> Path:
    return config_home() / "sovereign.toml"


def load_settings(path: str | os.PathLike[str] | None = None) -> tuple[Settings, Path | None]:
    """Read the settings. An explicit path must exist; the default one may be absent.

    Returns the settings and the file they came from (None for built-in defaults).
    """
    explicit = path if path is not None else os.environ.get("SOVEREIGN_TUI_CONFIG")
    file = Path(explicit) if explicit else default_config_path()
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{file}: no such file (check --config or SOVEREIGN_TUI_CONFIG)") from None
        return Settings(), None
    except IsADirectoryError:
        raise ConfigError(f"{file}: is a directory, expected a TOML file") from None
    except PermissionError:
        raise ConfigError(f"{file}: not readable (check its permissions)") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot be read ({exc.strerror})") from None
    return parse_settings(data, file), file


def parse_settings(data: bytes | str, origin: Path | str = "sovereign.toml") -> Settings:
    try:
        settings = msgspec.toml.decode(data, type=Settings)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{origin}: {exc} (see the README's configuration section)") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML ({_first_line(exc)})") from None
    _check(settings, origin)
    return settings


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check(settings: Settings, origin: Path | str) -> None:
    p = settings.poller
    if p.concurrency < 1 or p.per_host < 1:
        raise ConfigError(f"{origin}: poller.concurrency and poller.per_host must be at least 1")
    for name in Sources.__struct_fields__:
        interval = getattr(settings.sources, name).interval_s
        if interval <= 0:
            raise ConfigError(f"{origin}: sources.{name}.interval_s must be positive, got {interval}")
    validate_dcgm(settings.sources.dcgm, origin)
    validate_nvidia_smi(settings.sources.nvidia_smi, origin)
    src = settings.sources
    validate_kube(src.kubernetes, src.kubevirt, src.kata, origin)
    try:
        validate_serve(settings.serve, f"{origin}: serve")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    problem = validate_ops(settings.ops, origin)
    if problem is not None:
        raise ConfigError(problem)
