"""Optional GPU telemetry for the benchmark through NVML (``nvidia-ml-py``).

Energy per step comes from two readings of the board's total-energy counter
(mJ) around the timed windows; mean power is that energy over the elapsed
time; the SM clock is sampled after every window. Everything is optional: with
no NVIDIA driver, ``nvmlInit`` raises ``NVMLError_LibraryNotFound`` and the
benchmark simply reports no telemetry.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Optional

import torch


class Telemetry:
    """NVML readings for one CUDA device; every method is a no-op when NVML is unavailable.

    Args:
        device: the benchmark device (nothing is read for a CPU).
    """

    def __init__(self, device: torch.device):
        self.available = False
        self.reason: Optional[str] = None
        self._nvml = None
        self._handle = None
        self._reset()
        if device.type != "cuda":
            self.reason = "not a CUDA device"
            return
        try:
            import pynvml
        except ImportError:
            self.reason = "nvidia-ml-py is not installed"
            return
        try:
            pynvml.nvmlInit()
            self._handle = _handle_for(pynvml, device)
        except pynvml.NVMLError as e:   # NVMLError_LibraryNotFound without a driver, and the like
            self.reason = f"NVML unavailable ({e})"
            return
        self._nvml = pynvml
        self.available = True

    def _reset(self) -> None:
        self._e0 = self._t0 = None
        self._e1 = self._t1 = None
        self._power: list[float] = []
        self._clock: list[float] = []

    def _read(self, fn, *args) -> Optional[float]:
        try:
            return float(fn(self._handle, *args))
        except self._nvml.NVMLError:
            return None

    def driver_version(self) -> Optional[str]:
        """The NVIDIA driver version, or ``None``."""
        if not self.available:
            return None
        try:
            v = self._nvml.nvmlSystemGetDriverVersion()
        except self._nvml.NVMLError:
            return None
        return v.decode() if isinstance(v, bytes) else str(v)

    def start(self) -> None:
        """Begin a measured interval (call after the device is idle)."""
        self._reset()
        if self.available:
            self._e0 = self._read(self._nvml.nvmlDeviceGetTotalEnergyConsumption)
        self._t0 = time.perf_counter()

    def sample(self) -> None:
        """Record power and SM clock now (after a timed window)."""
        if not self.available:
            return
        p = self._read(self._nvml.nvmlDeviceGetPowerUsage)
        if p is not None:
            self._power.append(p / 1000.0)  # mW -> W
        c = self._read(self._nvml.nvmlDeviceGetClockInfo, self._nvml.NVML_CLOCK_SM)
        if c is not None:
            self._clock.append(c)

    def stop(self) -> None:
        """End the measured interval (call after synchronising the device)."""
        self._t1 = time.perf_counter()
        if self.available:
            self._e1 = self._read(self._nvml.nvmlDeviceGetTotalEnergyConsumption)

    def result(self, steps: int) -> dict[str, Any]:
        """Telemetry of the last interval for ``steps`` steps (empty without NVML).

        Args:
            steps: steps run between :meth:`start` and :meth:`stop`.
        """
        if not self.available or self._t0 is None or self._t1 is None:
            return {}
        out: dict[str, Any] = {}
        dt = self._t1 - self._t0
        if self._e0 is not None and self._e1 is not None and self._e1 > self._e0 and dt > 0:
            joules = (self._e1 - self._e0) / 1000.0   # mJ -> J
            out.update(power_w=joules / dt, energy_j_per_step=joules / steps, power_source="energy counter")
        elif self._power:
            mean_w = statistics.fmean(self._power)
            out.update(power_w=mean_w, energy_j_per_step=mean_w * dt / steps, power_source="power samples")
        if self._clock:
            out["sm_clock_mhz"] = statistics.median(self._clock)
        return out

    def close(self) -> None:
        """Release NVML."""
        if self.available:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass
            self.available = False


def _handle_for(pynvml, device: torch.device):
    """The NVML handle of a torch CUDA device (by PCI bus id when torch reports it, else by index)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    bus = getattr(props, "pci_bus_id", None)
    if bus is not None:
        bus_id = f"{getattr(props, 'pci_domain_id', 0):08x}:{bus:02x}:{getattr(props, 'pci_device_id', 0):02x}.0"
        try:
            return pynvml.nvmlDeviceGetHandleByPciBusId(bus_id)
        except pynvml.NVMLError:
            pass
    return pynvml.nvmlDeviceGetHandleByIndex(index)
