"""Result files both faces write: JSON lines, CSV and the terminal table.

One record per image (:meth:`ClassificationResult.to_dict`, or ``{"path", "error"}``); the
command line streams them and File › Export Results writes the same fields.  Paths whose
bytes are not UTF-8 are written with ``\\xNN`` escapes, never dropped, never a crash.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import IO

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


class ResultWriter:
    """Writes records to a text stream as JSON lines, CSV rows or table lines."""

    def __init__(self, fmt: str, stream: IO[str]) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown result format {fmt!r}; choose one of {', '.join(FORMATS)}")
        self.fmt, self.stream = fmt, stream
        self.csv = None
        if fmt == "csv":
            self.csv = csv.DictWriter(stream, fieldnames=CSV_FIELDS, extrasaction="ignore")
            self.csv.writeheader()

    def write(self, obj: dict) -> None:
        obj = record(obj)
        if self.fmt == "json":
            self.stream.write(json.dumps(obj, ensure_ascii=False) + "\n")
        elif self.fmt == "csv":
            for row in csv_rows(obj):
                self.csv.writerow({k: csv_cell(v) for k, v in row.items()})
        else:
            self.stream.write(table_line(obj) + "\n")
        self.stream.flush()


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
