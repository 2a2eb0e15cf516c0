"""What a checkpoint brings besides its tensors, read safely and validated: labels
(``NAME.labels.txt``, ``NAME.labels.json``, a labels file chosen apart, or the file's
metadata), settings (``NAME.config.json`` or the file's metadata) and the preprocessing
they describe.

Every file is read through :func:`.safe_files.read_small_text` (regular files only, size
caps) and every JSON through :func:`.safe_files.loads_json` (nesting capped); a wrong type,
length or range is one :class:`CheckpointError` sentence, never a crash later.  A label
longer than :data:`MAX_LABEL_CHARS` is an error (a file of such "labels" is almost surely
the wrong file), not silently cut.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from .errors import CheckpointError
from .preprocess import Preprocessing
from .safe_files import CONFIG_CAP, LABELS_CAP, loads_json, read_small_text
from .text import brief, short_name

#: The longest label accepted, in characters.
MAX_LABEL_CHARS = 1000


def sidecar(path: Path, suffix: str) -> Path | None:
    """``NAME{suffix}`` or ``NAME.EXT{suffix}`` next to the checkpoint ``path``, if either
    exists (a pipe or device there is found too, and refused when it is read)."""
    stem = path.with_suffix("")
    for cand in (Path(f"{stem}{suffix}"), Path(f"{path}{suffix}")):
        if os.path.lexists(cand):
            return cand
    return None


def read_labels(
    path: Path, num_classes: int, meta: dict[str, str], labels_path: Path | None = None
) -> tuple[str, ...] | None:
    """The labels a checkpoint brings (a sidecar file or its metadata), or None when it
    brings none; a count that does not match ``num_classes`` is an error.

    ``labels_path`` (a ``.txt`` with one label per line, or a ``.json`` list or index →
    label object) wins over the sidecar files next to the checkpoint."""
    txt = sidecar(path, ".labels.txt")
    js = sidecar(path, ".labels.json")
    if labels_path is not None:
        is_json = labels_path.suffix.lower() == ".json"
        txt, js = (None, labels_path) if is_json else (labels_path, None)
    if txt is not None:
        source = txt.name
        text = read_small_text(txt, LABELS_CAP, "labels file").rstrip()
        lines = text.count("\n") + 1 if text else 0
        if lines > 2 * num_classes + 1000:  # do not split a huge file only to count it
            raise CheckpointError(
                f"{source} has {lines:,} labels but {short_name(path)} predicts {num_classes} classes; "
                "is this the right file?"
            )
        labels = _checked([ln.strip() for ln in text.splitlines()], source, lines=True)
    elif js is not None:
        source = js.name
        labels = _labels_from_json(read_small_text(js, LABELS_CAP, "labels file"), source)
    elif "labels" in meta:
        source = "the file's metadata"
        labels = _labels_from_json(meta["labels"], source)
    else:
        return None
    if len(labels) != num_classes:
        raise CheckpointError(
            f"{source} has {len(labels)} labels but {short_name(path)} predicts {num_classes} classes; "
            "fix the labels file so each line names one class, in order"
        )
    return tuple(labels)


def _labels_from_json(text: str, source: str) -> list[str]:
    try:
        data = loads_json(text)
    except ValueError as exc:
        raise CheckpointError(
            f"{source} could not be read: {brief(str(exc) or type(exc).__name__)}"
        ) from None
    if isinstance(data, dict):
        data = _labels_from_index(data, source)
    if not isinstance(data, list):
        raise CheckpointError(f"{source}: expected a list of labels or an index → label object")
    return _checked(data, source)


def _labels_from_index(data: dict, source: str) -> list:
    """An ``{"0": "cat", "1": "dog"}`` object as a list; the indices must be 0…n-1 exactly,
    or the names would silently land on the wrong classes."""
    index = {}
    for k, v in data.items():
        if not (isinstance(k, str) and k.strip().isascii() and k.strip().isdigit() and len(k) < 12):
            raise CheckpointError(f"{source}: the keys of a labels object must be class numbers")
        index[int(k)] = v
    missing = sorted(set(range(len(index))) - set(index))
    if missing:
        raise CheckpointError(
            f"{source}: class numbers must run from 0 to {len(index) - 1}; {missing[0]} is missing"
        )
    return [index[i] for i in range(len(index))]


def _checked(items: list, source: str, lines: bool = False) -> list[str]:
    """Labels as strings: each a string or a number, at most :data:`MAX_LABEL_CHARS` long.
    Messages name a label by its class number, or by its line (from 1) when ``lines``."""
    out = []
    for i, x in enumerate(items):
        where = f"line {i + 1}" if lines else f"label {i}"
        if isinstance(x, bool) or not isinstance(x, (str, int, float)):
            what = type(x).__name__ if x is not None else "null"
            raise CheckpointError(f"{source}: {where} is {what}, not a string or a number")
        s = x if isinstance(x, str) else str(x)
        if len(s) > MAX_LABEL_CHARS:
            raise CheckpointError(
                f"{source}: {where} is {len(s):,} characters long (at most {MAX_LABEL_CHARS:,}); "
                "is this the right file?"
            )
        out.append(s)
    return out


def config_overrides(path: Path, meta: dict[str, str]) -> dict:
    """The settings of a checkpoint: its metadata's ``config`` with ``NAME.config.json`` over
    it, and the metadata's ``preprocessing`` where the config names none."""
    name = short_name(path)
    cfg: dict = {}
    if "config" in meta:
        cfg.update(_json_object(meta["config"], f"{name}: its metadata holds a broken config"))
    side = sidecar(path, ".config.json")
    if side is not None:
        text = read_small_text(side, CONFIG_CAP, "config file")
        cfg.update(_json_object(text, f"{short_name(side)} could not be read"))
    if "preprocessing" in meta and "preprocessing" not in cfg:
        try:
            cfg["preprocessing"] = loads_json(meta["preprocessing"])
        except ValueError as exc:
            raise CheckpointError(
                f"{name}: its metadata holds broken preprocessing ({brief(str(exc))})"
            ) from None
    return cfg


def _json_object(text: str, failure: str) -> dict:
    try:
        data = loads_json(text)
    except ValueError as exc:
        raise CheckpointError(f"{failure}: {brief(str(exc) or type(exc).__name__)}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{failure}: expected a JSON object of settings")
    return data


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def preprocessing(cfg: dict, default: Preprocessing) -> Preprocessing:
    """The config's ``preprocessing`` settings over the family's ``default`` (size, patch,
    mean and std); without settings, ``default`` itself.  A :class:`ValueError` says what is
    wrong with them (the checks on values are :class:`Preprocessing`'s own)."""
    p = cfg.get("preprocessing")
    if p is None or p == {}:
        return default
    if not isinstance(p, dict):
        raise ValueError(f"expected a JSON object of settings, found {type(p).__name__}")
    size = p.get("input_size", list(default.input_size))
    if _whole(size):
        h = w = size
    elif isinstance(size, list) and len(size) == 2 and all(_whole(v) for v in size):
        h, w = size
    else:
        raise ValueError(f"input_size must be a whole number or [height, width], not {brief(repr(size), 40)}")
    patch = p.get("patch_size", default.patch_size)
    resize = p.get("resize_size")
    for key, value in (("patch_size", patch), ("resize_size", resize)):
        if value is not None and not _whole(value):
            raise ValueError(f"{key} must be a whole number, not {brief(repr(value), 40)}")
    stats = {}
    for key in ("mean", "std"):
        v = p.get(key, list(getattr(default, key)))
        if not (isinstance(v, list) and len(v) == 3 and all(_number(x) for x in v)):
            raise ValueError(f"{key} must be three numbers (red, green, blue), not {brief(repr(v), 40)}")
        stats[key] = tuple(float(x) for x in v)
    mode, interp = p.get("mode", "resize_crop"), p.get("interpolation", "bilinear")
    for key, value in (("mode", mode), ("interpolation", interp)):
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a name, not {brief(repr(value), 40)}")
    return Preprocessing(input_size=(h, w), patch_size=patch, mean=stats["mean"], std=stats["std"],
                         mode=mode, resize_size=resize, interpolation=interp)  # fmt: skip


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
