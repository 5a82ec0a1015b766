"""Device and host readings for the dashboard: NVML per visible GPU, torch's allocator, CPU and RAM from /proc.

Readings are plain frozen dataclasses, so tests and recordings can stand in for a live machine.
Nothing here raises: a missing driver, an unsupported field or an unreadable file becomes None.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class GpuReading:
    """One GPU as NVML sees it; a field the device does not support (MIG, some boards) is None."""

    index: int
    name: str
    util_percent: float | None = None
    mem_used: int | None = None  # bytes
    mem_total: int | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None


@dataclass(frozen=True)
class TorchMemory:
    """The CUDA caching allocator of the trainer's device, in bytes."""

    allocated: int
    reserved: int
    peak: int


@dataclass(frozen=True)
class HostReading:
    cpu_percent: float | None  # whole machine, since the previous reading
    cpus: int
    ram_used: int | None  # bytes: MemTotal - MemAvailable
    ram_total: int | None
    rss: int | None  # the trainer process


@dataclass(frozen=True)
class Telemetry:
    gpus: tuple[GpuReading, ...] = ()
    torch_memory: TorchMemory | None = None
    host: HostReading | None = None
    note: str = ""  # why there are no GPU readings, when there are none


def visible_gpu_selectors(env: str | None) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as a list of indices or UUID prefixes; None when unset (all GPUs are visible)."""
    if env is None:
        return None
    selectors = []
    for item in env.split(","):
        item = item.strip()
        if not item or item == "-1":
            break  # CUDA ignores everything after an invalid entry
        selectors.append(item)
    return selectors


class NvmlReader:
    """NVML handles of the visible GPUs, opened once; `read()` never raises."""

    def __init__(self, visible: str | None):
        self.handles: list[tuple[int, Any]] = []
        self.nvml: Any = None
        self.note = ""
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            all_handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception as e:  # no driver, no library, or the pynvml import itself failed
            self.note = f"NVML unavailable ({type(e).__name__}: {e})"
            return
        selectors = visible_gpu_selectors(visible)
        if selectors is None:
            self.handles = list(enumerate(all_handles))
        else:
            uuids = [self._call(pynvml.nvmlDeviceGetUUID, h) or "" for h in all_handles]
            for position, sel in enumerate(selectors):
                match = (
                    int(sel)
                    if sel.isdigit() and int(sel) < len(all_handles)
                    else next((i for i, u in enumerate(uuids) if u.startswith(sel)), None)
                )
                if match is not None:
                    self.handles.append((position, all_handles[match]))
        if not self.handles:
            self.note = "NVML sees no visible GPU"

    @staticmethod
    def _call(fn, *args) -> Any:
        try:
            return fn(*args)
        except Exception:  # NVMLError_NotSupported and friends: that field stays empty
            return None

    def read(self) -> tuple[GpuReading, ...]:
        readings = []
        nv, call = self.nvml, self._call
        for index, handle in self.handles:
            name = call(nv.nvmlDeviceGetName, handle) or "GPU"
            util = call(nv.nvmlDeviceGetUtilizationRates, handle)
            mem = call(nv.nvmlDeviceGetMemoryInfo, handle)
            power = call(nv.nvmlDeviceGetPowerUsage, handle)
            limit = call(nv.nvmlDeviceGetEnforcedPowerLimit, handle)
            readings.append(
                GpuReading(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else name,
                    util_percent=util.gpu if util is not None else None,
                    mem_used=mem.used if mem is not None else None,
                    mem_total=mem.total if mem is not None else None,
                    temperature_c=call(nv.nvmlDeviceGetTemperature, handle, nv.NVML_TEMPERATURE_GPU),
                    power_w=power / 1000 if power is not None else None,
                    power_limit_w=limit / 1000 if limit is not None else None,
                )
            )
        return tuple(readings)


class HostReader:
    """CPU use (from /proc/stat deltas), RAM and the trainer's RSS; `proc` is replaceable for tests."""

    def __init__(self, proc: str | Path = "/proc", pid: int | None = None):
        self.proc = Path(proc)
        self.pid = pid or os.getpid()
        self._last_cpu: tuple[int, int] | None = self._cpu_times()

    def _cpu_times(self) -> tuple[int, int] | None:
        """(busy, total) jiffies of all CPUs."""
        try:
            fields = [int(v) for v in (self.proc / "stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        total = sum(fields[:8])  # guest time is already counted in user
        return total - idle, total

    def read(self) -> HostReading:
        cpu = None
        now = self._cpu_times()
        if now and self._last_cpu and now[1] > self._last_cpu[1]:
            cpu = 100.0 * (now[0] - self._last_cpu[0]) / (now[1] - self._last_cpu[1])
        self._last_cpu = now or self._last_cpu
        meminfo = {}
        try:
            for line in (self.proc / "meminfo").read_text().splitlines():
                key, _, rest = line.partition(":")
                meminfo[key] = int(rest.split()[0]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        total, available = meminfo.get("MemTotal"), meminfo.get("MemAvailable")
        rss = None
        try:
            rss = int((self.proc / str(self.pid) / "statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            pass
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cpus = os.cpu_count() or 1
        return HostReading(
            cpu_percent=cpu,
            cpus=cpus,
            ram_used=total - available if total is not None and available is not None else None,
            ram_total=total,
            rss=rss,
        )


def torch_memory(device: Any) -> TorchMemory | None:
    """The allocator's counters for a CUDA device (no synchronisation); None on other devices."""
    if getattr(device, "type", None) != "cuda":
        return None
    import torch

    try:
        return TorchMemory(
            allocated=torch.cuda.memory_allocated(device),
            reserved=torch.cuda.memory_reserved(device),
            peak=torch.cuda.max_memory_allocated(device),
        )
    except Exception:  # a device lost mid-run must not take the dashboard with it
        return None


class TelemetrySampler:
    """Everything the system panel shows; GPU readings only when the run is on a CUDA device."""

    def __init__(self, device: Any = None, visible: str | None = None, proc: str | Path = "/proc"):
        self.device = device
        self.host = HostReader(proc)
        self.nvml = NvmlReader(visible) if getattr(device, "type", None) == "cuda" else None

    def read(self) -> Telemetry:
        return Telemetry(
            gpus=self.nvml.read() if self.nvml else (),
            torch_memory=torch_memory(self.device),
            host=self.host.read(),
            note=self.nvml.note if self.nvml else "",
        )
