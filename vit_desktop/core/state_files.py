"""Reading the tensors of a checkpoint file safely: ``torch.load(..., weights_only=True)``
(:func:`safe_torch_load`, the app's one call of it) and safetensors, within a memory budget
(what the file declares is checked against its size before anything large is allocated and
the parameter count is capped: :mod:`.safe_files`).  :mod:`.checkpoints` builds models from
what these functions read, and the families that read model folders use them too (they sit
below both, so neither imports the other in a circle).
"""

from __future__ import annotations

import pickle
import re
import stat
import warnings
from pathlib import Path

import torch

from .errors import CheckpointError
from .safe_files import (
    check_tensor_sizes,
    is_out_of_memory,
    require_param_budget,
    safetensors_numel,
    zip_problem,
)
from .text import brief, short_name

_WRAPPERS = ("state_dict", "model_state_dict", "model", "module", "net", "ema", "state_dict_ema", "model_ema")


class SafeLoadError(CheckpointError):
    """:func:`safe_torch_load` could not give the file's contents.

    ``kind`` says why, for callers that treat the cases apart (a cached download that is
    ``"refused"`` or ``"damaged"`` is removed; one that hit ``"memory"`` or ``"io"`` is not):
    ``"refused"`` (it holds Python objects the safe unpickler will not build), ``"damaged"``
    (not a readable PyTorch file), ``"io"`` (the disk failed), ``"memory"``.  ``reason`` is the
    message without the file name."""

    def __init__(self, name: str, reason: str, kind: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.reason = reason
        self.kind = kind


def safe_torch_load(path: Path, name: str | None = None) -> object:
    """``torch.load(path, map_location="cpu", weights_only=True)``: tensors and plain
    containers only, so nothing in the file can run.  Every failure is one
    :class:`SafeLoadError` whose message starts with ``name`` (default: the file's name)."""
    name = name or short_name(path)
    problem = zip_problem(path)  # before torch.load: a compressed record would be inflated whole
    if problem:
        raise SafeLoadError(name, f"not a PyTorch checkpoint: {problem}", "damaged")
    try:
        with warnings.catch_warnings():
            # torch notes unusual pickle protocols; the safe loader still decides alone.
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # The safe unpickler stops at the first thing that is not a tensor or a plain
        # container: a code-running pickle and random bytes both end here, and nothing ran.
        found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(exc))
        what = f"it holds a Python object ({found.group(1).rstrip('.')}), " if found else ""
        raise SafeLoadError(
            name,
            f"refused by the safe loader: {what}not a plain tensor checkpoint (a file holding other "
            "Python objects could run code); save a state_dict or use safetensors",
            "refused",
        ) from None
    except MemoryError:
        raise SafeLoadError(name, "not enough memory to read this checkpoint", "memory") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError, IndexError) as exc:
        if is_out_of_memory(exc):  # torch's allocator says so in a RuntimeError
            raise SafeLoadError(name, "not enough memory to read this checkpoint", "memory") from None
        kind = "io" if isinstance(exc, OSError) and not isinstance(exc, EOFError) else "damaged"
        why = brief(str(exc) or type(exc).__name__)
        raise SafeLoadError(name, f"not a readable PyTorch checkpoint ({why})", kind) from None


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata from a .safetensors or .pth/.pt file, safely."""
    name = short_name(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise CheckpointError(f"{name}: no such file") from None
    except OSError as exc:
        raise CheckpointError(f"{name}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    if stat.S_ISDIR(info.st_mode):
        raise CheckpointError(f"{name}: is a folder, not a checkpoint file")
    if not stat.S_ISREG(info.st_mode):  # a pipe or device would block or never end
        raise CheckpointError(f"{name}: is not a regular file (a pipe or a device), not a checkpoint")
    if info.st_size == 0:
        raise CheckpointError(f"{name}: the file is empty")
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError, safe_open

        require_param_budget(safetensors_numel(path, name), name)
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = dict(f.metadata() or {})
                state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            why = brief(str(exc) or type(exc).__name__)
            if is_out_of_memory(exc):
                raise CheckpointError(f"{name}: not enough memory to read this checkpoint") from None
            raise CheckpointError(f"{name}: not a valid safetensors file ({why})") from None
        except MemoryError:
            raise CheckpointError(f"{name}: not enough memory to read this checkpoint") from None
        return state, meta
    state = state_dict_of(safe_torch_load(path, name), name)
    check_tensor_sizes(state, name, info.st_size)
    return state, {}


def state_dict_of(obj: object, name: str) -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint, found inside up to three wrapper dicts
    (``{"state_dict": …}``, ``{"model": …}``, ``{"ema": …}``…); other values are dropped."""
    for _ in range(3):
        if isinstance(obj, dict) and not _is_tensor_dict(obj):
            for key in _WRAPPERS:
                if key in obj and isinstance(obj[key], dict):
                    obj = obj[key]
                    break
            else:
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{name}: holds no state dict (found {type(obj).__name__})")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{name}: holds no tensors")
    return tensors


def _is_tensor_dict(d: dict) -> bool:
    return bool(d) and sum(isinstance(v, torch.Tensor) for v in d.values()) >= len(d) / 2


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod.", "model."):
            while k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out
