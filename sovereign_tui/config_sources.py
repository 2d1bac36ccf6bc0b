"""Settings of the GPU fleet sources (dcgm-exporter, Prometheus, nvidia-smi over SSH).

Kept apart from `config` for size; declared here, not in the collectors, so that reading the
settings never imports a collector. Every field is documented where it is declared.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from yarl import URL


class ConfigError(Exception):
    """A configuration problem, phrased as one line naming the file and the fix."""


DEFAULT_DCGM_PORT = 9400


class DcgmEndpoint(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    url: str
    """The exporter, e.g. ``http://10.0.0.11:9400/metrics`` (``/metrics`` and port 9400 are
    assumed when left out)."""
    host: str | None = None
    """Host name to file the GPUs under; by default the exporter's ``Hostname``/``hostname``
    label, else the URL's host. Set it where the exporter runs as a pod whose host label is the
    pod's name rather than the node's."""


class DcgmSource(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    enabled: bool = False
    """Scrape dcgm-exporter on each listed GPU host. Off until endpoints are configured."""
    interval_s: float = 15.0
    """Seconds between scrapes of one exporter (dcgm-exporter itself samples every 30 s by
    default; set its ``-c`` collect interval to match)."""
    endpoints: tuple[str | DcgmEndpoint, ...] = ()
    """The exporters: URLs, or ``{url = "...", host = "gpu-01"}`` tables."""
    timeout_s: float = 5.0
    """Longest wait for one exporter's answer; shorter than `interval_s`."""


@dataclass(frozen=True)
class Endpoint:
    """One configured exporter, normalised."""

    url: str
    hostport: str
    host: str | None


def normalise(entry: str | DcgmEndpoint) -> Endpoint:
    """The full URL, ``host:port`` and configured host name of an endpoint entry."""
    raw, host = (entry, None) if isinstance(entry, str) else (entry.url, entry.host)
    text = raw.strip()
    if "://" not in text:
        text = f"http://{text}"
    url = URL(text)
    host_part = url.host
    if url.scheme not in ("http", "https") or not host_part or url.port is None:
        raise ValueError(f"{raw!r} is not an http(s) URL")
    if url.explicit_port is None and not raw.strip().startswith(("http://", "https://")):
        url = url.with_port(DEFAULT_DCGM_PORT)
    if url.path in ("", "/"):
        url = url.with_path("/metrics")
    address = f"[{host_part}]" if ":" in host_part else host_part
    return Endpoint(url=str(url), hostport=f"{address}:{url.port}", host=host)


def validate_dcgm(source: DcgmSource, origin: object = "sovereign.toml") -> list[Endpoint]:
    """The normalised endpoints, or a `ConfigError` line naming the setting and the fix."""
    where = f"{origin}: sources.dcgm"
    if source.interval_s <= 0:
        raise ConfigError(f"{where}.interval_s must be positive, got {source.interval_s}")
    if not 0 < source.timeout_s < source.interval_s:
        raise ConfigError(
            f"{where}.timeout_s must be positive and shorter than interval_s "
            f"({source.timeout_s:g}s vs {source.interval_s:g}s)"
        )
    endpoints: list[Endpoint] = []
    seen: set[str] = set()
    for entry in source.endpoints:
        try:
            ep = normalise(entry)
        except ValueError as exc:
            raise ConfigError(f"{where}.endpoints: {exc}; write e.g. http://10.0.0.11:9400/metrics") from None
        if ep.hostport in seen:
            raise ConfigError(f"{where}.endpoints: {ep.hostport} is listed twice")
        seen.add(ep.hostport)
        endpoints.append(ep)
    return endpoints


class PrometheusSource(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    enabled: bool = False
    """Read GPU telemetry from a Prometheus-compatible query API. Off until `url` is set."""
    url: str = ""
    """Base URL of Prometheus or Thanos Query, e.g. ``http://prometheus.monitoring:9090``."""
    interval_s: float = 15.0
    """Seconds between queries; no shorter than Prometheus' own scrape interval is useful."""
    timeout_s: float = 10.0
    """Longest wait for the query's answer; shorter than `interval_s`."""
    selector: str = ""
    """Extra label matchers added to the query, e.g. ``job="dcgm-exporter",cluster="west"``."""
    host_labels: tuple[str, ...] = ("Hostname", "hostname", "instance")
    """Labels that name a GPU's host, the first present wins; ``instance`` loses its port. Put a
    relabelled node label first (e.g. ``node``) where the exporters run as pods."""
    bearer_token_file: str | None = None
    """File holding a bearer token for an authenticating proxy in front of the API."""
    exporter_pods: tuple[str, ...] = ("*dcgm-exporter*",)
    """Patterns (fnmatch) of the exporters' own pod names. Under Kubernetes discovery Prometheus
    labels every series with the scraped pod, so a free GPU's series carry the exporter's pod:
    such a pod is never taken for the GPU's holder."""


class SshHost(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    name: str
    """Host name the GPUs are filed under: the name Nova, Ironic and Kubernetes know it by."""
    address: str
    """DNS name or IP address to connect to (and to look up in known_hosts)."""
    port: int = 22
    user: str | None = None
    """Remote user; defaults to the local user name, as ssh does."""


class NvidiaSmiSource(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    enabled: bool = True
    """Poll the GPUs of the listed hosts with ``nvidia-smi`` over SSH."""
    interval_s: float = 10.0
    hosts: tuple[SshHost, ...] = ()
    """The GPU hosts, e.g. ``hosts = [{name = "gpu-01", address = "10.0.0.11"}]``."""
    known_hosts: str | None = None
    """OpenSSH known_hosts file that every host key is checked against; ``~/.ssh/known_hosts``."""
    client_keys: tuple[str, ...] = ()
    """Private key files (unencrypted) to log in with; by default the first of ``~/.ssh/id_ed25519``,
    ``id_ecdsa``, ``id_rsa`` that exist."""
    connect_timeout_s: float = 4.0
    """Longest wait for a connection and its authentication."""
    command_timeout_s: float = 4.0
    """Longest wait for nvidia-smi's answer on an open connection."""
    concurrency: int = 64
    """Most hosts being connected to or queried at once (handshakes cost CPU: keep it bounded)."""


def validate_nvidia_smi(source: NvidiaSmiSource, origin: object = "sovereign.toml") -> None:
    """Configuration checks, as `ConfigError` lines (to be called from the settings' checks)."""
    where = f"{origin}: sources.nvidia_smi"
    if source.interval_s <= 0:
        raise ConfigError(f"{where}.interval_s must be positive, got {source.interval_s}")
    if source.connect_timeout_s <= 0 or source.command_timeout_s <= 0:
        raise ConfigError(f"{where}.connect_timeout_s and command_timeout_s must be positive")
    if source.connect_timeout_s + source.command_timeout_s >= source.interval_s:
        raise ConfigError(
            f"{where}: connect_timeout_s + command_timeout_s must be shorter than interval_s "
            f"({source.connect_timeout_s + source.command_timeout_s:g}s >= {source.interval_s:g}s)"
        )
    if source.concurrency < 1:
        raise ConfigError(f"{where}.concurrency must be at least 1")
    seen: set[str] = set()
    for h in source.hosts:
        if not h.name or not h.address:
            raise ConfigError(f"{where}.hosts: every host needs a name and an address")
        if h.name in seen:
            raise ConfigError(f"{where}.hosts: host name {h.name!r} is listed twice")
        if not 0 < h.port < 65536:
            raise ConfigError(f"{where}.hosts: {h.name}: port {h.port} is not a TCP port")
        seen.add(h.name)


# --- Kubernetes, KubeVirt, Kata -------------------------------------------------------------------


class KubernetesSource(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    enabled: bool = False
    """Read nodes, pods, runtime classes and disruption budgets from a Kubernetes API."""
    kubeconfig: str | None = None
    """kubeconfig file; None uses the kubernetes client's own default ($KUBECONFIG, then
    ``~/.kube/config``, then the in-cluster service account). KubeVirt and Kata read the same
    cluster, so these two settings apply to them even when this source is off."""
    context: str | None = None
    """Context in the kubeconfig; None uses its current-context."""
    interval_s: float = 10.0
    """Seconds between publications of what the watches hold (the watches themselves stream)."""
    timeout_s: float = 8.0
    """Longest a poll waits for a list or a watch to (re)connect; shorter than `interval_s`."""
    watch: bool = True
    """List once then watch (cost grows with change); False lists everything every poll."""
    page_size: int = 500
    """Objects per page of a list (``limit``/``continue``)."""
    watch_timeout_s: float = 300.0
    """A watch asks the server to end it after 1-2 times this (spread), then resumes from where
    it was, as client-go does."""


class KubevirtSource(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    enabled: bool = False
    """Read KubeVirt's VirtualMachines, their instances and migrations (same cluster as
    `sources.kubernetes`)."""
    interval_s: float = 10.0
    timeout_s: float = 8.0


class KataSource(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    enabled: bool = False
    """Read Kata Containers: runtime classes and Kata pods from the API (same cluster as
    `sources.kubernetes`) and each Kata node's kata-monitor ``/metrics``."""
    interval_s: float = 15.0
    timeout_s: float = 5.0
    """Longest wait for one kata-monitor's answer; shorter than `interval_s`."""
    endpoints: dict[str, str] = msgspec.field(default_factory=dict)
    """kata-monitor URL per node name, e.g. ``{"gpu-01" = "http://10.0.0.11:8090/metrics"}``.
    When empty, they are discovered: every node labelled `node_label` at
    ``http://<its InternalIP>:<monitor_port>/metrics``."""
    monitor_port: int = 8090
    """kata-monitor's port on each node (its DaemonSet listens on 0.0.0.0:8090)."""
    node_label: str = "katacontainers.io/kata-runtime=true"
    """``key=value`` label of the nodes where kata-deploy installed Kata."""


def validate_kube(
    kube: KubernetesSource, kubevirt: KubevirtSource, kata: KataSource, origin: object = "sovereign.toml"
) -> None:
    """Configuration checks of the three Kubernetes sources, as `ConfigError` lines."""
    for name, interval, timeout in (
        ("kubernetes", kube.interval_s, kube.timeout_s),
        ("kubevirt", kubevirt.interval_s, kubevirt.timeout_s),
        ("kata", kata.interval_s, kata.timeout_s),
    ):
        if not 0 < timeout < interval:
            raise ConfigError(
                f"{origin}: sources.{name}.timeout_s must be positive and shorter than interval_s "
                f"({timeout:g}s vs {interval:g}s)"
            )
    if kube.page_size < 1:
        raise ConfigError(f"{origin}: sources.kubernetes.page_size must be at least 1")
    if kube.watch_timeout_s < 10:
        raise ConfigError(f"{origin}: sources.kubernetes.watch_timeout_s must be at least 10 seconds")
    if not 0 < kata.monitor_port < 65536:
        raise ConfigError(f"{origin}: sources.kata.monitor_port {kata.monitor_port} is not a TCP port")
    key, eq, _ = kata.node_label.partition("=")
    if not key or not eq:
        raise ConfigError(f"{origin}: sources.kata.node_label must read key=value, got {kata.node_label!r}")
    for node, url in kata.endpoints.items():
        parsed = URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ConfigError(
                f"{origin}: sources.kata.endpoints: {node}: {url!r} is not an http(s) URL; "
                "write e.g. http://10.0.0.11:8090/metrics"
            )
