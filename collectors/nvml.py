"""This machine's GPUs through NVML (``pynvml`` from nvidia-ml-py).

NVML calls block, so every one runs in a worker thread. The library is initialised once, lazily,
in that thread; the device handles, each GPU's identity and the XID event set are kept across
polls and rebuilt only after an error that means the driver went away (the next poll, paced by
the poller's backoff, initialises again). A query a GPU does not support, or that this user may
not make, leaves that one field ``None`` (N/A) and keeps the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psutil
import pynvml

from collectors.base import Capability
from sovereign_tui.config import NvmlSource
from sovereign_tui.model import Gpu, GpuProcess, Observation
from sovereign_tui.poller import PollContext, PollError, Target

T = TypeVar("T")

MIB = 1024 * 1024
_LIBRARY = "libnvidia-ml.so.1"
_CLOSE_WAIT_S = 5.0
_MAX_EVENTS_PER_POLL = 1024
"""Bound on the events drained in one poll, so a storm cannot hold the worker thread."""

# Errors after which the handles are worthless: the driver was unloaded, upgraded under us, or a
# GPU fell off the bus. The session is dropped and NVML initialised again on the next poll.
_SESSION_LOST = frozenset(
    {
        pynvml.NVML_ERROR_UNINITIALIZED,
        pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
        pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH,
        pynvml.NVML_ERROR_GPU_IS_LOST,
        pynvml.NVML_ERROR_RESET_REQUIRED,
    }
)


def _session_lost(exc: Exception) -> bool:
    return isinstance(exc, pynvml.NVMLError) and exc.value in _SESSION_LOST


def _optional(query: Callable[[], T]) -> T | None:
    """One field: ``None`` when this GPU cannot answer it (not supported, no permission, too
    old a driver...). Errors that mean the driver or the GPU is gone propagate."""
    try:
        return query()
    except pynvml.NVMLError as exc:
        if exc.value in _SESSION_LOST:
            raise
        return None
    except pynvml.NVMLLibraryMismatchError:
        return None


def _address(handle: Any) -> int | None:
    """The device pointer a handle or an event's ``device`` field holds, to match the two."""
    value = ctypes.cast(handle, ctypes.c_void_p).value
    return int(value) if value is not None else None


def _process_name(pid: int) -> str | None:
    try:
        return psutil.Process(pid).name()
    except (psutil.Error, OSError):
        return None  # gone already, another user's, or in another PID namespace


def _mib(value: Any) -> float | None:
    return None if value is None else int(value) / MIB


def _init_message(exc: Exception, library: str | None) -> str:
    code = getattr(exc, "value", None)
    if code == pynvml.NVML_ERROR_LIBRARY_NOT_FOUND:
        if library:
            return (
                f"NVML: {library} did not load as {_LIBRARY} (point sources.nvml.library at the "
                "driver's libnvidia-ml.so.1 or disable sources.nvml)"
            )
        return (
            f"NVML: {_LIBRARY} not found (no NVIDIA driver on this machine; set sources.nvml.library "
            "or disable sources.nvml)"
        )
    if code == pynvml.NVML_ERROR_DRIVER_NOT_LOADED:
        return "NVML: the NVIDIA kernel driver is not loaded (load the nvidia module or disable sources.nvml)"
    if code == pynvml.NVML_ERROR_NO_PERMISSION:
        return "NVML: no permission to open the GPUs (run as a user who may open /dev/nvidia*)"
    if code == pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH:
        return (
            "NVML: library and kernel driver versions differ "
            "(reload the nvidia module or reboot after the upgrade)"
        )
    return f"NVML: initialisation failed: {exc} (check the NVIDIA driver with nvidia-smi)"


@dataclass
class _Device:
    """One GPU of the session: its handle and what never changes while the driver is up."""

    index: int
    handle: Any
    uuid: str
    name: str | None
    bus_id: str | None
    xid_supported: bool = False

    @property
    def key(self) -> str:
        return self.uuid or f"#{self.index}"


@dataclass
class _Session:
    driver_version: str | None
    devices: list[_Device]
    event_set: Any | None


class NvmlCollector:
    name = "nvml"
    capabilities: frozenset[Capability] = frozenset({"read"})

    def __init__(self, settings: NvmlSource) -> None:
        self.settings = settings
        self.host = settings.host or socket.gethostname()
        self.target_id = f"nvml:{self.host}"
        self._session: _Session | None = None
        self._preloaded: ctypes.CDLL | None = None
        self._lock = threading.Lock()
        self._xid_last: dict[str, int] = {}
        """Last XID per GPU (uuid), kept across re-initialisations: the XID that preceded a
        driver reload is the one an operator needs to see."""

    def targets(self) -> list[Target]:
        if not self.settings.enabled:
            return []
        return [
            Target(
                id=self.target_id,
                source=self.name,
                endpoint="local",
                interval_s=self.settings.interval_s,
                poll=self.poll,
                fingerprint=self.settings.library or "",
            )
        ]

    async def poll(self, ctx: PollContext) -> Observation:
        gpus = await asyncio.to_thread(self._read, ctx.clock.time())
        return Observation(gpus=gpus)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._close)

    # --- in the worker thread ---------------------------------------------------------------------

    def _read(self, observed_at: float) -> tuple[Gpu, ...]:
        # A query stuck in the driver (a hung GPU) keeps the lock: say so instead of piling up threads.
        if not self._lock.acquire(blocking=False):
            raise PollError("NVML: the previous query is still waiting on the driver (a hung GPU? see dmesg)")
        try:
            session = self._session or self._open()
            where = "reading the XID events"
            try:
                self._drain_events(session)
                gpus = []
                for dev in session.devices:
                    where = f"GPU {dev.index} ({dev.uuid or 'no uuid'}, {dev.bus_id or 'no bus id'})"
                    gpus.append(self._gpu(session, dev, observed_at))
                return tuple(gpus)
            except pynvml.NVMLError as exc:
                if not _session_lost(exc):
                    raise PollError(f"NVML: {where}: {exc}") from None
                self._drop_session()
                if exc.value in (pynvml.NVML_ERROR_GPU_IS_LOST, pynvml.NVML_ERROR_RESET_REQUIRED):
                    raise PollError(f"NVML: {where}: {exc} (it needs a GPU reset or a reboot)") from None
                raise PollError(
                    f"NVML: {exc} (the driver went away; NVML is reopened on the next poll)"
                ) from None
        finally:
            self._lock.release()

    def _close(self) -> None:
        # A query hung in the driver holds the lock: leave NVML to the process exit then.
        if not self._lock.acquire(timeout=_CLOSE_WAIT_S):
            return
        try:
            self._drop_session()
        finally:
            self._lock.release()

    def _load_library(self) -> None:
        """Preload ``library`` when configured. Its soname is libnvidia-ml.so.1, so pynvml's own
        ``CDLL("libnvidia-ml.so.1")`` then resolves to this already-loaded object."""
        path = self.settings.library
        if path is None or self._preloaded is not None:
            return
        if not os.path.exists(path):
            raise PollError(
                f"NVML: {path} not found (set sources.nvml.library to the driver's {_LIBRARY} "
                "or disable sources.nvml)"
            )
        try:
            self._preloaded = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PollError(
                f"NVML: cannot load {path} ({reason}); set sources.nvml.library to {_LIBRARY}"
            ) from None

    def _open(self) -> _Session:
        self._load_library()
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise PollError(_init_message(exc, self.settings.library)) from None
        loaded = pynvml.nvmlLib
        if self._preloaded is not None and getattr(loaded, "_handle", None) != self._preloaded._handle:
            self._shutdown()
            raise PollError(
                f"NVML: {self.settings.library} is not the {_LIBRARY} NVML loaded (its soname differs; "
                f"point sources.nvml.library at the driver's {_LIBRARY})"
            )
        try:
            session = self._enumerate()
        except pynvml.NVMLError as exc:
            self._shutdown()
            raise PollError(f"NVML: listing the GPUs failed: {exc} (check them with nvidia-smi)") from None
        self._session = session
        return session

    def _enumerate(self) -> _Session:
        driver = _optional(lambda: str(pynvml.nvmlSystemGetDriverVersion()))
        devices: list[_Device] = []
        for index in range(int(pynvml.nvmlDeviceGetCount())):
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            except pynvml.NVMLError_NoPermission:
                continue  # a GPU this container or user may not open: not ours to show
            devices.append(_identify(index, handle))
        event_set = _optional(pynvml.nvmlEventSetCreate)
        if event_set is not None:
            for dev in devices:
                dev.xid_supported = _register_xid(dev.handle, event_set)
        return _Session(driver_version=driver, devices=devices, event_set=event_set)

    def _drain_events(self, session: _Session) -> None:
        """Take every pending event without waiting; keep each GPU's last XID."""
        if session.event_set is None or not any(d.xid_supported for d in session.devices):
            return
        by_address = {_address(d.handle): d for d in session.devices}
        for _ in range(_MAX_EVENTS_PER_POLL):
            try:
                data = pynvml.nvmlEventSetWait(session.event_set, 0)
            except pynvml.NVMLError as exc:
                if exc.value in _SESSION_LOST:
                    raise
                return  # NVML_ERROR_TIMEOUT: nothing pending (any other error: try next poll)
            if int(data.eventType) & pynvml.nvmlEventTypeXidCriticalError:
                dev = by_address.get(_address(data.device))
                if dev is not None:
                    self._xid_last[dev.key] = int(data.eventData)

    def _gpu(self, session: _Session, dev: _Device, observed_at: float) -> Gpu:
        h = dev.handle
        memory = _memory(h)
        util = _optional(lambda: pynvml.nvmlDeviceGetUtilizationRates(h))
        power = _optional(lambda: int(pynvml.nvmlDeviceGetPowerUsage(h)))
        limit = _optional(lambda: int(pynvml.nvmlDeviceGetEnforcedPowerLimit(h)))
        mig = _optional(lambda: pynvml.nvmlDeviceGetMigMode(h))
        procs = _optional(lambda: pynvml.nvmlDeviceGetComputeRunningProcesses(h)) or []
        return Gpu(
            source=self.target_id,
            observed_at=observed_at,
            host=self.host,
            index=dev.index,
            uuid=dev.uuid,
            name=dev.name,
            bus_id=dev.bus_id,
            memory_total_mib=_mib(memory.total) if memory is not None else None,
            memory_used_mib=_mib(memory.used) if memory is not None else None,
            util_gpu_pct=float(util.gpu) if util is not None else None,
            util_memory_pct=float(util.memory) if util is not None else None,
            temperature_c=_optional(
                lambda: float(pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU))
            ),
            power_w=power / 1000 if power is not None else None,
            power_limit_w=limit / 1000 if limit is not None else None,
            ecc_uncorrected=_optional(
                lambda: int(
                    pynvml.nvmlDeviceGetTotalEccErrors(
                        h, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC
                    )
                )
            ),
            mig_mode=_mig_mode(mig),
            xid_last=self._xid_last.get(dev.key) if dev.xid_supported else None,
            driver_version=session.driver_version,
            processes=tuple(
                GpuProcess(
                    pid=int(p.pid), name=_process_name(int(p.pid)), used_memory_mib=_mib(p.usedGpuMemory)
                )
                for p in procs
            ),
        )

    def _drop_session(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        if session.event_set is not None:
            with contextlib.suppress(pynvml.NVMLError):  # the driver is gone: nothing left to free
                pynvml.nvmlEventSetFree(session.event_set)
        self._shutdown()

    @staticmethod
    def _shutdown() -> None:
        with contextlib.suppress(pynvml.NVMLError):  # already gone with the driver
            pynvml.nvmlShutdown()


def _identify(index: int, handle: Any) -> _Device:
    """What stays true of a GPU while the driver is up, read once per session."""
    pci = _optional(lambda: pynvml.nvmlDeviceGetPciInfo(handle))
    return _Device(
        index=index,
        handle=handle,
        uuid=_optional(lambda: str(pynvml.nvmlDeviceGetUUID(handle))) or "",
        name=_optional(lambda: str(pynvml.nvmlDeviceGetName(handle))),
        bus_id=_bus_id(pci),
    )


def _register_xid(handle: Any, event_set: Any) -> bool:
    """Ask for this GPU's XID errors; False where it cannot report them."""
    try:
        pynvml.nvmlDeviceRegisterEvents(handle, pynvml.nvmlEventTypeXidCriticalError, event_set)
    except pynvml.NVMLError as exc:
        if exc.value in _SESSION_LOST:
            raise
        return False
    return True


def _mig_mode(modes: Any) -> str | None:
    """``[current, pending]`` as nvidia-smi words the current mode; None where MIG is unsupported."""
    if modes is None:
        return None
    return "Enabled" if modes[0] == pynvml.NVML_DEVICE_MIG_ENABLE else "Disabled"


def _bus_id(pci: Any) -> str | None:
    if pci is None:
        return None
    raw = pci.busId
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return text or None


def _memory(handle: Any) -> Any:
    """Memory in bytes: the v2 query, whose ``used`` leaves out the driver's reservation as
    nvidia-smi does; the v1 query on drivers that lack v2."""
    try:
        return pynvml.nvmlDeviceGetMemoryInfo(handle, version=pynvml.nvmlMemory_v2)
    except pynvml.NVMLError as exc:
        if exc.value in _SESSION_LOST:
            raise
        if exc.value not in (
            pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
            pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH,
        ):
            return None
    return _optional(lambda: pynvml.nvmlDeviceGetMemoryInfo(handle))
