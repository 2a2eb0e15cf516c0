"""Result files both faces write: JSON lines, CSV and the terminal table.

One record per image (:meth:`ClassificationResult.to_dict`, or ``{"path", "error"}``); the
command line streams them and File › Export Results writes the same fields.  Paths whose
bytes are not UTF-8 are written with ``\\xNN`` escapes, never dropped, never a crash.

A JSON-lines output can be resumed: it is only ever appended to, a line at a time, so a
crash leaves at most a torn last line, which :func:`read_done` ignores and
:func:`open_append` cuts before writing on.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .errors import VitDesktopError
from .text import display, json_safe

FORMATS = ("json", "csv", "table")
CSV_FIELDS = ("path", "model", "device", "rank", "label", "index", "prob", "latency_ms",
              "image_width", "image_height", "crop_left", "crop_top", "crop_right",
              "crop_bottom", "grid_rows", "grid_cols", "peak_x", "peak_y", "error",
              "overlay_file")  # fmt: skip


def record(obj: dict) -> dict:
    """A result record safe for any writer: its path and error as JSON-safe text."""
    out = dict(obj)
    out["path"] = json_safe(str(out["path"]))
    if "error" in out:
        out["error"] = json_safe(str(out["error"]))
    if "top_k" in out:  # a label file may hold lone surrogates too
        out["top_k"] = [{**p, "label": json_safe(str(p["label"]))} for p in out["top_k"]]
    return out


def failure_record(path: str, error: str) -> dict:
    return record({"path": path, "error": error})


def csv_rows(obj: dict) -> Iterator[dict]:
    if "error" in obj:
        yield {"path": obj["path"], "error": obj["error"], "overlay_file": obj.get("overlay_file")}
        return
    crop = obj["crop_box"]
    peak = obj["attention_peak"] or [None, None]
    for rank, pred in enumerate(obj["top_k"], 1):
        yield {
            "path": obj["path"], "model": obj["model"], "device": obj["device"], "rank": rank,
            "label": pred["label"], "index": pred["index"], "prob": pred["prob"],
            "latency_ms": obj["latency_ms"], "image_width": obj["image_size"][0],
            "image_height": obj["image_size"][1], "crop_left": crop[0], "crop_top": crop[1],
            "crop_right": crop[2], "crop_bottom": crop[3], "grid_rows": obj["patch_grid"][0],
            "grid_cols": obj["patch_grid"][1], "peak_x": peak[0], "peak_y": peak[1], "error": "",
            "overlay_file": obj.get("overlay_file"),
        }  # fmt: skip


def table_line(obj: dict) -> str:
    """One line for a terminal: names and labels with control characters (escape
    sequences) shown as escapes, never sent to the terminal raw."""
    name = display(obj["path"])
    if "error" in obj:
        return f"{name}\tERROR\t{display(obj['error'])}"
    preds = ", ".join(f"{display(str(p['label']))} {p['prob'] * 100:.1f}%" for p in obj["top_k"][:3])
    return f"{name}\t{preds}\t{obj['latency_ms']:.0f} ms"


#: What a spreadsheet runs as a formula when a cell starts with it.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """A CSV cell a spreadsheet shows as text: control characters escaped, and a text that
    starts like a formula (``=``, ``+``, ``-``, ``@``) prefixed with ``'``.  Numbers stay
    numbers."""
    if not isinstance(value, str):
        return value
    if value.startswith(FORMULA_PREFIXES):
        value = "'" + value
    return display(value)


class OutputError(VitDesktopError):
    """The results could not be written (the disk is full or failed)."""


class ResultWriter:
    """Writes records to a text stream as JSON lines, CSV rows or table lines.

    ``sync_s``: for a file that must survive a machine crash too, the records written are
    forced to the disk (fsync) at most this many seconds apart, and by :meth:`sync`."""

    def __init__(self, fmt: str, stream: IO[str], sync_s: float | None = None) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown result format {fmt!r}; choose one of {', '.join(FORMATS)}")
        self.fmt, self.stream = fmt, stream
        self.sync_s, self._synced = sync_s, time.monotonic()
        self.written = 0
        self.csv = None
        if fmt == "csv":
            self.csv = csv.DictWriter(stream, fieldnames=CSV_FIELDS, extrasaction="ignore")
            self.csv.writeheader()

    def write(self, obj: dict) -> None:
        """Write one record; a disk that is full or fails is one :class:`OutputError` saying how
        many records were written before (the ones written stay)."""
        try:
            self._write(obj)
        except BrokenPipeError:
            raise  # the reader went away (``| head``): the command line ends quietly
        except OSError as exc:
            raise OutputError(
                f"cannot write the results ({exc.strerror or exc}); the {self.written} records written before "
                "are kept (with --output, rerun with --resume to finish)"
            ) from None
        self.written += 1

    def _write(self, obj: dict) -> None:
        obj = record(obj)
        if self.fmt == "json":
            self.stream.write(json.dumps(obj, ensure_ascii=False) + "\n")
        elif self.fmt == "csv":
            for row in csv_rows(obj):
                self.csv.writerow({k: csv_cell(v) for k, v in row.items()})
        else:
            self.stream.write(table_line(obj) + "\n")
        self.stream.flush()
        if self.sync_s is not None and time.monotonic() - self._synced >= self.sync_s:
            self.sync()

    def sync(self) -> None:
        """Everything written so far onto the disk (when the stream is a file)."""
        self.stream.flush()
        try:
            os.fsync(self.stream.fileno())
        except (AttributeError, OSError, ValueError):  # a pipe, a terminal, a StringIO
            pass
        self._synced = time.monotonic()


def format_for(path: str) -> str:
    """JSON lines, or CSV when the file name ends in .csv."""
    return "csv" if path.lower().endswith(".csv") else "json"


def open_output(path: str) -> IO[str]:
    return open(path, "w", encoding="utf-8", newline="", errors="backslashreplace")  # noqa: SIM115


def write_results(records: Iterable[dict], path: str) -> int:
    """Every record into ``path`` (format from its extension); returns how many."""
    n = 0
    with open_output(path) as f:
        w = ResultWriter(format_for(path), f)
        for obj in records:
            w.write(obj)
            n += 1
    return n


# -- one outcome's record (both engines) --------------------------------------------------------


def outcome_record(
    res, overlay_dir: Path | None = None, max_pixels: int | None = None
) -> tuple[dict, str | None]:
    """The record of one outcome (a ClassificationResult or an ImageFailure) as the command
    line writes it, whichever engine classified it.  With ``overlay_dir`` the default map's
    overlay is written there first and the record says which file it is (``overlay_file``,
    null when none was written); the second value is why an overlay could not be written
    (the classification stays in the record), else None."""
    obj = res.to_dict()
    if overlay_dir is None:
        return obj, None
    written, err = None, None
    if "error" not in obj and getattr(res, "attention", None) is not None:
        written, err = write_overlay(res, overlay_dir, max_pixels)
    obj["overlay_file"] = json_safe(str(written)) if written else None
    return obj, err


def write_overlay(res, out_dir: Path, max_pixels: int | None) -> tuple[Path | None, str | None]:
    """The default map over the image at its own resolution, as a new NAME.overlay.png
    (NAME-1.overlay.png, … when taken; never through a link, never over a file): the path
    written, or the reason in one line when it cannot be drawn or written."""
    from . import maps
    from .errors import VitDesktopError
    from .overlay import render_on_original, save_new_png

    try:
        grid = maps.compute(res.attention, maps.DEFAULT_MAP)
        img = render_on_original(res.source, grid, res.geometry, max_pixels=max_pixels)
        return save_new_png(img, out_dir, res.source), None
    except VitDesktopError as exc:
        return None, exc.one_line()


# -- resuming a JSON-lines output ---------------------------------------------------------------


@dataclass
class Done:
    """What a JSON-lines output already holds: the paths it has a record for (as records
    write them, :func:`json_safe`), how many of those records are failures, and how many
    lines could not be read (a torn last line after a crash)."""

    paths: set[str] = field(default_factory=set)
    failed: int = 0
    unreadable: int = 0

    def has(self, path: str) -> bool:
        return json_safe(str(path)) in self.paths


def read_done(path: str | os.PathLike[str], model: str | None = None) -> Done:
    """The records already in ``path`` (none when it does not exist).  A line that is not a
    whole JSON record with a path (a torn last line) is counted, not trusted.  ``model``: the
    model the rerun uses; records of another model are refused in one :class:`OutputError`
    (one file would otherwise mix two models' answers)."""
    done = Done()
    try:
        f = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return done
    with f:
        for raw in f:
            try:
                if not raw.endswith(b"\n"):
                    raise ValueError("torn")
                obj = json.loads(raw)
                p = obj["path"]
                if not isinstance(p, str):
                    raise ValueError("no path")
            except (ValueError, KeyError, TypeError):
                done.unreadable += 1
                continue
            other = obj.get("model")
            if model is not None and isinstance(other, str) and other != model:
                raise OutputError(
                    f"{display(os.fspath(path))} holds results of the model {display(other)}, not "
                    f"{display(model)}: resume with that model, or write to another file"
                )
            if p not in done.paths:
                done.paths.add(p)
                done.failed += "error" in obj
    return done


def open_append(path: str | os.PathLike[str]) -> IO[str]:
    """``path`` opened for appending records (created when missing), after cutting a torn
    last line so that the next record starts on a line of its own."""
    try:
        with open(path, "rb+") as f:
            end = f.seek(0, os.SEEK_END)
            keep = end
            while keep > 0:  # back to just after the last newline
                start = max(0, keep - 65536)
                f.seek(start)
                block = f.read(keep - start)
                if end == keep and block.endswith(b"\n"):
                    break
                nl = block.rfind(b"\n")
                if nl >= 0:
                    keep = start + nl + 1
                    break
                keep = start
            if keep != end:
                f.truncate(keep)
    except FileNotFoundError:
        pass
    return open(path, "a", encoding="utf-8", newline="", errors="backslashreplace")  # noqa: SIM115
