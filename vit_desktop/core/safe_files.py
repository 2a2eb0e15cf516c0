"""Reading the files a stranger hands us (checkpoints and the files beside them) without
hanging, without running out of memory, and with one-line :class:`CheckpointError`\\ s.

* Small text files (labels, configs): :func:`read_small_text` opens them like images are
  opened (:mod:`.images`): without blocking, checked with ``fstat`` to be a regular file
  (a pipe would wait for a writer forever; ``/dev/zero`` would never end), and refused
  above a size cap before anything is read.  :func:`loads_json` refuses deep nesting
  before parsing, so no ``RecursionError`` can come out of a hostile file.
* Checkpoints: what a file *declares* is checked against what it *holds* before anything
  large is allocated: a ``.pth`` archive must store its records uncompressed, as
  ``torch.save`` does (:func:`zip_problem`); a tensor must not be an expanded view of a
  smaller storage, and all tensors together must not need far more memory than the file
  (:func:`check_tensor_sizes`); a safetensors header's byte ranges must lie in the file and
  match their shapes (:func:`safetensors_numel`); and the parameter count is capped by
  :data:`MAX_PARAMS_ENV` (:func:`require_param_budget`).
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from .errors import CheckpointError
from .text import brief, short_name

#: Size caps for the text files beside a checkpoint.
LABELS_CAP = 16_000_000
CONFIG_CAP = 1_000_000
#: Deepest JSON nesting accepted in labels, configs and safetensors headers.
MAX_JSON_DEPTH = 16
#: The environment variable that raises (or lowers) the parameter cap, and its default
#: (ViT-H/14 has 632 million parameters).
MAX_PARAMS_ENV = "VIT_DESKTOP_MAX_PARAMS"
DEFAULT_MAX_PARAMS = 2_000_000_000
#: A safetensors header larger than this is refused (the safetensors library's own limit).
SAFETENSORS_HEADER_CAP = 100 * 1024 * 1024

_SAFETENSORS_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
                      "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8,
                      "U64": 8}  # fmt: skip
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_OOM_WORDS = ("can't allocate memory", "not enough memory", "out of memory", "cannot allocate memory")


def _mb(n: int) -> str:
    """``n`` bytes for a person: "900 bytes", "16 MB", "67.2 MB", "3.7 GB"."""
    if n < 1e6:
        return f"{n:,} bytes"
    value, unit = (n / 1e6, "MB") if n < 1e9 else (n / 1e9, "GB")
    return f"{value:,.1f}".removesuffix(".0") + f" {unit}"


def open_regular(path: str | os.PathLike[str], what: str) -> BinaryIO:
    """``path`` opened for binary reading if it is a regular file; a :class:`CheckpointError`
    ("{what} NAME: is a pipe, not a regular file"…) otherwise.  Opened without blocking and
    checked with ``fstat`` on the open file, so nothing can swap it in between."""
    name = short_name(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(os.fspath(path), flags)
    except FileNotFoundError:
        raise CheckpointError(f"{what} {name} does not exist") from None
    except OSError as exc:
        if isinstance(exc, IsADirectoryError):
            raise CheckpointError(f"{what} {name} is a folder, not a file") from None
        raise CheckpointError(
            f"{what} {name} cannot be read ({exc.strerror or type(exc).__name__})"
        ) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a folder" if stat.S_ISDIR(mode) else "a pipe" if stat.S_ISFIFO(mode)
                    else "a socket" if stat.S_ISSOCK(mode) else "a device")  # fmt: skip
            raise CheckpointError(f"{what} {name} is {kind}, not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_small_text(path: str | os.PathLike[str], cap: int, what: str) -> str:
    """The UTF-8 text (a byte-order mark dropped) of the regular file ``path``, refused when
    it is larger than ``cap`` bytes; every failure is a one-line :class:`CheckpointError`
    that starts with ``what`` and the file's name."""
    name = short_name(path)
    too_big = f"{what} {name} is too large (over {_mb(cap)}); is this the right file?"
    try:
        with open_regular(path, what) as f:
            if os.fstat(f.fileno()).st_size > cap:
                raise CheckpointError(too_big)
            data = f.read(cap + 1)  # the file may have grown since fstat
    except OSError as exc:
        raise CheckpointError(
            f"{what} {name} could not be read ({exc.strerror or type(exc).__name__})"
        ) from None
    if len(data) > cap:
        raise CheckpointError(too_big)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CheckpointError(f"{what} {name} could not be read: it is not UTF-8 text") from None


def json_depth(text: str) -> int:
    """How deep the arrays and objects of the JSON ``text`` nest (brackets inside strings
    not counted); no recursion, so any depth is measured safely."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    if not brackets:
        return 0
    codes = np.frombuffer(brackets.encode("ascii"), np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1)
    return int(np.cumsum(steps, dtype=np.int64).max())


def loads_json(text: str, max_depth: int = MAX_JSON_DEPTH) -> object:
    """``json.loads(text)``, with nesting deeper than ``max_depth`` refused first; every
    failure is a :class:`ValueError` with a short reason."""
    depth = json_depth(text)
    if depth > max_depth:
        raise ValueError(f"its JSON is nested {depth:,} levels deep (at most {max_depth})")
    try:
        return json.loads(text)
    except RecursionError:  # cannot happen after the depth check; kept as a last guard
        raise ValueError("its JSON is nested too deeply") from None


# -- the memory budget of a checkpoint -------------------------------------------------------


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a :class:`MemoryError` or torch's allocation failure (a ``RuntimeError``
    such as "DefaultCPUAllocator: can't allocate memory")."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(w in text for w in _OOM_WORDS)


def max_params() -> int:
    """The parameter cap: :data:`MAX_PARAMS_ENV` when set (``2e9`` and ``2000000000`` both
    read), else :data:`DEFAULT_MAX_PARAMS`."""
    raw = os.environ.get(MAX_PARAMS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PARAMS
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 1:
        raise CheckpointError(
            f"{MAX_PARAMS_ENV}={brief(raw, 40)} is not a parameter count (set it to a number such as 5e9)"
        )
    return int(value)


def require_param_budget(params: int, name: str) -> None:
    """Refuse a model of more than :func:`max_params` parameters, naming the setting."""
    cap = max_params()
    if params > cap:
        raise CheckpointError(
            f"{name}: {params / 1e6:,.0f} million parameters is above the limit of {cap / 1e6:,.0f} "
            f"million (a guard against files that would exhaust memory); set {MAX_PARAMS_ENV} to a "
            "larger number to load it"
        )


def zip_problem(path: Path) -> str | None:
    """Why the ``.pth`` archive ``path`` must not reach ``torch.load``, or None (also for a
    file that is not a zip archive: the loader says what is wrong with it).  ``torch.save``
    stores its records uncompressed; a compressed record could inflate far beyond the file."""
    try:
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
        size = path.stat().st_size
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError):
        return None
    for rec in records:
        if rec.compress_type != zipfile.ZIP_STORED:
            return (
                f"its record {brief(rec.filename, 60)} is compressed, which torch.save never does "
                "(refused: it could inflate to far more memory than the file's size)"
            )
    declared = sum(rec.file_size for rec in records)
    if declared > size:
        return f"its records declare {_mb(declared)} in a file of {_mb(size)} (a damaged or forged archive)"
    return None


def check_tensor_sizes(state: Mapping[str, torch.Tensor], name: str, file_size: int) -> None:
    """Refuse tensors that declare far more memory than the file holds: expanded views
    (a stride of 0, or a storage smaller than the tensor) and, all together, more than four
    times the file's size; then cap the parameter count (:func:`require_param_budget`)."""
    total_bytes = total = 0
    for key, t in state.items():
        label = brief(key, 60)
        if t.layout != torch.strided:
            raise CheckpointError(f"{name}: {label} is a {t.layout} tensor; save dense tensors")
        try:
            stored = t.untyped_storage().nbytes()
        except (RuntimeError, NotImplementedError):
            raise CheckpointError(f"{name}: {label} is a tensor without readable data") from None
        need = t.numel() * t.element_size()
        if need > stored or any(s == 0 and n > 1 for s, n in zip(t.stride(), t.shape)):
            raise CheckpointError(
                f"{name}: {label} is an expanded view ({'×'.join(map(str, t.shape))} values over "
                f"{_mb(stored)} of stored data) that would need {_mb(need)}; save real tensors (.clone())"
            )
        total_bytes += need
        total += t.numel()
    if total_bytes > 4 * file_size + (1 << 20):
        raise CheckpointError(
            f"{name}: its tensors declare {_mb(total_bytes)} in a file of {_mb(file_size)} "
            "(the same data viewed many times); save real tensors"
        )
    require_param_budget(total, name)


def safetensors_numel(path: Path, name: str) -> int:
    """Check the safetensors header of ``path`` before any tensor is read (every byte range
    inside the file and as long as its shape and dtype say) and return the total number of
    values it declares; a :class:`CheckpointError` naming the first problem otherwise."""
    bad = f"{name}: not a valid safetensors file"
    with open_regular(path, "checkpoint") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if length < 2 or length > min(size - 8, SAFETENSORS_HEADER_CAP):
            raise CheckpointError(f"{bad} (its header length {max(length, 0):,} does not fit the file)")
        raw = f.read(length)
    try:
        header = loads_json(raw.decode("utf-8"), 8)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{bad} (its header is not JSON: {brief(str(exc), 80)})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{bad} (its header is not a JSON object)")
    data_size = size - 8 - length
    total = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        label = brief(key, 60)
        try:
            shape, (start, end), dtype = info["shape"], info["data_offsets"], info["dtype"]
            ok = all(type(v) is int and v >= 0 for v in [*shape, start, end]) and isinstance(dtype, str)
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise CheckpointError(f"{bad} (the header entry of {label} is malformed)")
        numel = math.prod(shape)
        width = _SAFETENSORS_BYTES.get(dtype)
        if not start <= end <= data_size or (width is not None and numel * width != end - start):
            raise CheckpointError(
                f"{bad} ({label} declares {'×'.join(map(str, shape))} {dtype} values in bytes {start:,}–{end:,} "
                f"of {data_size:,})"
            )
        total += numel
    return total
