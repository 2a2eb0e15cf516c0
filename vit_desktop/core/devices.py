"""Device choice: ``auto`` picks CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import DeviceError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class DeviceStatus:
    name: str
    available: bool
    reason: str  # why not, or what it is


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def device_status() -> list[DeviceStatus]:
    """Every device the app offers, with whether it works here and why (not)."""
    out = [DeviceStatus("cpu", True, f"{torch.get_num_threads()} threads")]
    if torch.cuda.is_available():
        out.append(DeviceStatus("cuda", True, torch.cuda.get_device_name(0)))
    elif torch.version.cuda is None:
        out.append(DeviceStatus("cuda", False, "this PyTorch build has no CUDA support"))
    else:
        out.append(DeviceStatus("cuda", False, "no CUDA GPU or driver found"))
    if _mps_available():
        out.append(DeviceStatus("mps", True, "Apple GPU"))
    else:
        out.append(DeviceStatus("mps", False, "Apple Metal (MPS) is only on macOS with Apple GPUs"))
    return out


def resolve_device(name: str = "auto") -> torch.device:
    name = (name or "auto").lower()
    if name not in DEVICE_CHOICES and not name.startswith("cuda:"):
        raise DeviceError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    status = {s.name: s for s in device_status()}
    base = name.split(":")[0]
    if not status[base].available:
        raise DeviceError(f"{base.upper()} is not available: {status[base].reason}")
    return torch.device(name)


def is_out_of_memory(exc: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_device_memory(device: torch.device) -> None:
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device.type == "mps" and _mps_available():
        torch.mps.empty_cache()
