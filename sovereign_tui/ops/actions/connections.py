"""The SDK clients operations act through, made once per process and only when first needed.

OpenStack (Nova, Ironic, StarlingX) through openstacksdk's `Connection`, built from clouds.yaml
by openstacksdk's own loader; StarlingX's sysinv through that connection's keystoneauth session
(service type ``platform``). Kubernetes and KubeVirt through the kubernetes client's `ApiClient`,
built from a kubeconfig by the client's own loader. Building them is blocking: done off the loop.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sovereign_tui.ops.actions.base import LayerUnavailable, off_loop, one_line
from sovereign_tui.ops.settings import LAYERS

if TYPE_CHECKING:
    from sovereign_tui.config import Settings


@dataclass(frozen=True)
class Targets:
    cloud: str | None = None
    clouds_yaml: str | None = None
    region: str | None = None
    interface: str = "public"
    kubeconfig: str | None = None
    kube_context: str | None = None
    layers: tuple[str, ...] = LAYERS

    @classmethod
    def from_settings(cls, settings: Settings) -> Targets:
        ops, nova, kube = settings.ops, settings.sources.nova, settings.sources.kubernetes
        return cls(
            cloud=ops.cloud or nova.cloud,
            clouds_yaml=ops.clouds_yaml or nova.clouds_yaml,
            region=ops.region or nova.region,
            interface=ops.interface or nova.interface,
            kubeconfig=ops.kubeconfig or kube.kubeconfig,
            kube_context=ops.kube_context or kube.context,
            layers=ops.layers,
        )


class Connections:
    def __init__(self, targets: Targets) -> None:
        self.targets = targets
        self._openstack: Any = None
        self._kube: Any = None
        self._lock = asyncio.Lock()

    def enabled(self, layer: str) -> bool:
        return layer in self.targets.layers

    def _require(self, layer: str) -> None:
        if not self.enabled(layer):
            raise LayerUnavailable(f"{layer}: left out of ops.layers in the settings")

    async def openstack(self, layer: str = "nova") -> Any:
        """openstacksdk's Connection for the configured cloud."""
        self._require(layer)
        async with self._lock:
            if self._openstack is None:
                self._openstack = await off_loop(self._connect_openstack)
        return self._openstack

    async def proxy(self, service: str, layer: str) -> Any:
        """openstacksdk's proxy for `service` (compute, baremetal): made off the loop, as making
        one may ask the endpoint for its versions."""
        conn = await self.openstack(layer)
        return await off_loop(getattr, conn, service)

    def _connect_openstack(self) -> Any:
        import openstack.config
        import openstack.connection
        from openstack import exceptions

        t = self.targets
        if not t.cloud:
            raise LayerUnavailable("openstack: no cloud configured (set ops.cloud or sources.nova.cloud)")
        files = [t.clouds_yaml] if t.clouds_yaml else None
        try:
            cfg = openstack.config.OpenStackConfig(config_files=files, load_envvars=False)
            region = cfg.get_one(cloud=t.cloud, region_name=t.region, interface=t.interface)
        except exceptions.ConfigException as exc:
            where = t.clouds_yaml or "clouds.yaml"
            raise LayerUnavailable(f"{where}: {one_line(exc)} (check the cloud name '{t.cloud}')") from None
        return openstack.connection.Connection(config=region)

    async def kube(self, layer: str = "kubernetes") -> Any:
        """The kubernetes client's ApiClient for the configured kubeconfig and context."""
        self._require(layer)
        async with self._lock:
            if self._kube is None:
                self._kube = await off_loop(self._connect_kube)
        return self._kube

    def _connect_kube(self) -> Any:
        from kubernetes import config
        from kubernetes.config.config_exception import ConfigException

        t = self.targets
        path = t.kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
        path = path or str(Path.home() / ".kube" / "config")
        if not Path(path).is_file():
            raise LayerUnavailable(
                f"kubernetes: no kubeconfig at {path} "
                "(set sources.kubernetes.kubeconfig, ops.kubeconfig or $KUBECONFIG)"
            )
        try:
            return config.new_client_from_config(config_file=path, context=t.kube_context)  # type: ignore[no-untyped-call]
        except (ConfigException, ValueError, KeyError, TypeError) as exc:
            raise LayerUnavailable(f"kubernetes: {path}: {one_line(exc)} (fix the kubeconfig)") from None

    async def close(self) -> None:
        kube, self._kube = self._kube, None
        if kube is not None:
            await off_loop(kube.close)
        conn, self._openstack = self._openstack, None
        if conn is not None:
            await off_loop(conn.close)
