"""Device choice: ``auto`` picks CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .defaults import DEVICE_CHOICES
from .errors import DeviceError


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


# -- fast mode: lower-precision compute where the hardware does it natively --------------

_X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpu_flags() -> set[str]:
    """The CPU feature flags Linux reports (x86 ``flags``, Arm ``Features``); empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX on x86, the
    BF16 extension on Arm) and PyTorch's oneDNN can use it.  Without it bfloat16 is emulated
    and slower than float32."""
    flags = _cpu_flags()
    native = any(f in flags for f in _X86_BF16_FLAGS) or "bf16" in flags
    if not native:
        return False
    check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else True
    except Exception:
        return False


def fast_dtype(device: torch.device) -> tuple[torch.dtype | None, str]:
    """The dtype fast mode computes in on ``device`` and what that is, or (None, why not).

    bfloat16 on CPUs with native bfloat16 arithmetic, float16 on CUDA and Apple GPUs."""
    if device.type == "cuda":
        return torch.float16, "float16 on the GPU"
    if device.type == "mps":
        return torch.float16, "float16 on the Apple GPU"
    if device.type == "cpu":
        if cpu_has_native_bf16():
            return torch.bfloat16, "bfloat16 on the CPU"
        return None, (
            "this CPU has no bfloat16 instructions (AVX512-BF16, AMX or Arm BF16), "
            "where fast mode would be slower than float32"
        )
    return None, f"fast mode is not available on {device.type.upper()}"


# -- threads ------------------------------------------------------------------------------

_blas_limited = False


def limit_numpy_blas_threads(threads: int = 1) -> bool:
    """Run numpy's OpenBLAS on ``threads`` threads (Linux; elsewhere a no-op).

    The attention maps are small matrices (ViT-B/16: 12 × 197 × 197 per layer) computed on
    the GUI thread while torch's own thread pool may be running the next image; OpenBLAS's
    threads then fight torch's for the same cores.  Measured on 2 cores: a rollout map took
    30–55 ms on one BLAS thread against 75–175 ms on two.  torch's pool is not affected."""
    global _blas_limited
    if _blas_limited:
        return True
    import ctypes

    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            libs = {
                line.split()[-1] for line in fh if "openblas" in line.lower() and ".so" in line.split()[-1]
            }
    except OSError:
        return False
    names = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
             "openblas_set_num_threads64_", "openblas_set_num_threads")  # fmt: skip
    for path in sorted(libs):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in names:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn(ctypes.c_int(threads))
                _blas_limited = True
                break
    return _blas_limited


def decode_workers(cpu_count: int | None = None) -> int:
    """Threads that decode the next images while the model runs: one core is left to torch's
    pool on small machines (2 cores: 1 thread), at most 4."""
    n = cpu_count or os.cpu_count() or 2
    return max(1, min(4, n - 1))


def lower_thread_priority(niceness: int = 19) -> None:
    """Make the calling thread yield the cores to torch's compute threads (Linux, where a
    thread has its own nice value; elsewhere nothing).  Decoding at normal priority beside
    a forward pass slowed folder runs by 25–35% on 2 cores: torch's threads split the work
    evenly, so one descheduled thread holds all of them back."""
    import threading

    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):
        pass
