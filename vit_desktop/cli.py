"""``vit-desktop``: the app (no arguments) and the command line (subcommands).

Exit status: 0 all good, 1 some images failed, 2 usage, model or weights errors.  Errors
are one clear line on stderr; tracebacks go to the log file only.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from . import __version__
from .logs import ensure_std_streams, log_exception, setup_logging

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
COMMANDS = ("classify", "models", "download")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="vit-desktop",
        description="Classify images with Vision Transformers and see where they looked. "
        "With no command, opens the app.",
    )
    p.add_argument("--version", action="version", version=f"vit-desktop {__version__}")
    p.add_argument("--self-test", action="store_true",
                   help="check this installation (imports, Qt, the demo model, devices, caches), "
                   "print a short report and exit non-zero on any failure")  # fmt: skip
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    c = sub.add_parser("classify", help="classify images and folders")
    c.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    c.add_argument("--model", default=None, help="catalog id or checkpoint path (default: "
                   "ViT-B/16 when its weights are cached, else demo-shapes)")  # fmt: skip
    c.add_argument("--labels", metavar="FILE", help="labels for a checkpoint (.txt one per line, or .json) "
                   "instead of NAME.labels.txt next to it")
    c.add_argument("--top-k", type=int, default=5)
    c.add_argument("--format", choices=("json", "csv", "table"), default=None,
                   help="default: table on a terminal, json otherwise")  # fmt: skip
    c.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    c.add_argument("--batch-size", type=int, default=8)
    c.add_argument("--recursive", action="store_true", help="walk sub-folders too")
    c.add_argument("--attention-out", metavar="DIR", help="write NAME.overlay.png per image")
    c.add_argument("--no-attention", action="store_true",
                   help="skip attention (faster; attention_peak is null)")  # fmt: skip
    c.add_argument("--output", metavar="FILE", help="write results here instead of stdout")
    c.add_argument("--offline", action="store_true", help="never download weights")
    c.add_argument("--fast", action="store_true",
                   help="fast mode: bfloat16 on CPUs that support it, float16 on a GPU; about 2x "
                   "faster, probabilities differ slightly from float32")  # fmt: skip

    m = sub.add_parser("models", help="list the models")
    m.add_argument("--json", action="store_true")

    d = sub.add_parser("download", help="download a model's weights into the cache")
    d.add_argument("model_id", metavar="ID")
    return p


# -- image discovery -------------------------------------------------------------------------


def iter_image_paths(paths: Sequence[str], recursive: bool) -> Iterator[str]:
    """Files as given (even with odd extensions: the loader will say what is wrong) and the
    images inside folders (non-images skipped quietly; symlink loops not followed)."""
    from .core.images import is_image_path

    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            yield from _walk(p, recursive, is_image_path)
        else:
            yield raw


def _walk(root: Path, recursive: bool, is_image) -> Iterator[str]:
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:
            continue
        seen.add(key)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for e in entries:
            try:
                is_dir = e.is_dir()
            except OSError:  # a symlink that loops: the loader will say so, not silence
                is_dir = False
            if is_dir:
                if recursive:
                    subdirs.append(Path(e.path))
            elif is_image(e.name):
                yield e.path
        stack.extend(reversed(subdirs))


# -- output ---------------------------------------------------------------------------------

CSV_FIELDS = ("path", "model", "device", "rank", "label", "index", "prob", "latency_ms",
              "image_width", "image_height", "crop_left", "crop_top", "crop_right",
              "crop_bottom", "grid_rows", "grid_cols", "peak_x", "peak_y", "error")  # fmt: skip


def csv_rows(obj: dict) -> Iterator[dict]:
    if "error" in obj:
        yield {"path": obj["path"], "error": obj["error"]}
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
        }  # fmt: skip


def table_line(obj: dict) -> str:
    name = _printable(obj["path"])
    if "error" in obj:
        return f"{name}\tERROR\t{obj['error']}"
    preds = ", ".join(f"{p['label']} {p['prob'] * 100:.1f}%" for p in obj["top_k"][:3])
    return f"{name}\t{preds}\t{obj['latency_ms']:.0f} ms"


class Writer:
    def __init__(self, fmt: str, stream) -> None:
        self.fmt, self.stream = fmt, stream
        self.csv = None
        if fmt == "csv":
            self.csv = csv.DictWriter(stream, fieldnames=CSV_FIELDS, extrasaction="ignore")
            self.csv.writeheader()

    def write(self, obj: dict) -> None:
        if self.fmt == "json":
            self.stream.write(json.dumps(obj, ensure_ascii=False) + "\n")
        elif self.fmt == "csv":
            for row in csv_rows(obj):
                self.csv.writerow(row)
        else:
            self.stream.write(table_line(obj) + "\n")
        self.stream.flush()


def _printable(text: str) -> str:
    """One line whatever the file name holds: control characters (a newline in a name) and
    undecodable bytes are shown as escapes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for c in text)  # fmt: skip


def _display_path(path: str) -> str:
    # Non-UTF-8 names survive as escapes instead of crashing the JSON writer.
    return path.encode("utf-8", "backslashreplace").decode("utf-8")


# -- commands -------------------------------------------------------------------------------


def _progress(done: int, total: int | None, label: str) -> None:
    if not sys.stderr or not sys.stderr.isatty():
        return
    if total:
        sys.stderr.write(f"\r{label}: {done}/{total}")
    else:
        sys.stderr.write(f"\r{label}: {done}")
    sys.stderr.flush()


def cmd_classify(args: argparse.Namespace) -> int:
    from .core import maps
    from .core.classifier import default_model_id, load_classifier
    from .core.results import ClassificationResult

    if args.top_k < 1:
        raise _UsageError("--top-k must be at least 1")
    if args.batch_size < 1:
        raise _UsageError("--batch-size must be at least 1")
    model = args.model or default_model_id()
    clf = load_classifier(model, device=args.device, allow_download=not args.offline,
                          progress=_download_progress(), fast=args.fast, labels=args.labels)  # fmt: skip
    told = _tell(clf.notices, 0)
    fmt = args.format or ("table" if sys.stdout and sys.stdout.isatty() and not args.output else "json")
    out_dir = Path(args.attention_out) if args.attention_out else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    if args.no_attention:
        attention = "none"
    elif out_dir:  # keep what the default map needs to be drawn
        attention = "full" if maps.DEFAULT_MAP.kind == "rollout" else "cls"
    else:
        attention = "peak"
    paths = list(iter_image_paths(args.paths, args.recursive))
    stream = (
        open(args.output, "w", encoding="utf-8", newline="", errors="backslashreplace")  # noqa: SIM115
        if args.output
        else sys.stdout
    )
    failed = 0
    try:
        writer = Writer(fmt, stream)
        for i, res in enumerate(clf.iter_classify(paths, args.batch_size, args.top_k, attention), 1):
            obj = res.to_dict()
            obj["path"] = _display_path(obj["path"])
            if "error" in obj:
                obj["error"] = _display_path(obj["error"])
            if isinstance(res, ClassificationResult) and out_dir and res.attention is not None:
                err = _write_overlay(res, out_dir)
                if err:
                    obj = {"path": obj["path"], "error": _display_path(err)}
            if "error" in obj:
                failed += 1
                if fmt != "table" or stream is not sys.stdout:
                    print(f"vit-desktop: {_with_path(obj['path'], obj['error'])}", file=sys.stderr)
            writer.write(obj)
            _progress(i, len(paths), "classified")
            told = _tell(clf.notices, told)  # e.g. a GPU that ran out of memory
    finally:
        if stream is not sys.stdout:
            stream.close()
        if sys.stderr and sys.stderr.isatty() and paths:
            sys.stderr.write("\n")
    if not paths:
        print("vit-desktop: no images found", file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _tell(notices: list[str], already: int) -> int:
    for note in notices[already:]:
        print(f"vit-desktop: {note}", file=sys.stderr)
    return len(notices)


def _with_path(path: str, error: str) -> str:
    """``path: reason`` without repeating the file name the error already starts with."""
    path, error = _printable(path), _printable(error)
    name = os.path.basename(path)
    if name and error.startswith(name + ": "):
        error = error[len(name) + 2 :]
    return f"{path}: {error}"


def _write_overlay(res, out_dir: Path) -> str | None:
    from .core import maps
    from .core.errors import ImageLoadError
    from .core.images import load_image
    from .core.overlay import blend

    try:
        full = load_image(res.source)
        grid = maps.compute(res.attention, maps.DEFAULT_MAP)
        img = blend(full.image, grid, res.geometry)
        name = Path(res.source).stem or "image"
        target = out_dir / f"{name}.overlay.png"
        n = 1
        while target.exists() and n < 1000:
            target = out_dir / f"{name}-{n}.overlay.png"
            n += 1
        img.save(target)
    except ImageLoadError as exc:
        return exc.one_line()
    except MemoryError:
        return "not enough memory to draw the overlay at this image's resolution"
    except OSError as exc:
        return f"could not write the overlay: {exc.strerror or exc}"
    return None


def _download_progress():
    if not sys.stderr or not sys.stderr.isatty():
        return None

    def cb(done: int, total: int | None) -> None:
        if total:
            sys.stderr.write(f"\rdownloading: {done / 1e6:.0f}/{total / 1e6:.0f} MB")
        else:
            sys.stderr.write(f"\rdownloading: {done / 1e6:.0f} MB")
        sys.stderr.flush()

    return cb


def cmd_models(args: argparse.Namespace) -> int:
    from .core import catalog, weights

    items = catalog.entries()
    if args.json:
        print(json.dumps([e.to_dict(downloaded=weights.is_downloaded(e)) for e in items], indent=1))
        return EXIT_OK
    buf = io.StringIO()
    for group, group_items in catalog.group_order(items):
        buf.write(f"{group}\n")
        for e in group_items:
            mark = "*" if weights.is_downloaded(e) else " "
            buf.write(f" {mark} {e.id:<22} {e.display_name:<32} {e.summary()}\n")
    buf.write(f"\n* weights on disk; cache: {weights.cache_dir()}\n")
    sys.stdout.write(buf.getvalue())
    return EXIT_OK


def cmd_download(args: argparse.Namespace) -> int:
    from .core import catalog, weights

    entry = catalog.get(args.model_id)
    if not entry.downloadable:
        print(f"{entry.id} ships with the app; nothing to download")
        return EXIT_OK
    fetched = weights.ensure(entry, _download_progress())
    if sys.stderr and sys.stderr.isatty():
        sys.stderr.write("\n")
    verb = "downloaded" if fetched.downloaded else "already cached and verified:"
    print(f"{verb} {fetched.path}")
    return EXIT_OK


class _UsageError(Exception):
    pass


def run_cli(argv: Sequence[str]) -> int:
    from .core.errors import VitDesktopError

    parser = build_parser()
    args = parser.parse_args(argv)
    handler = {"classify": cmd_classify, "models": cmd_models, "download": cmd_download}[args.command]
    try:
        return handler(args)
    except _UsageError as exc:
        print(f"vit-desktop: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except VitDesktopError as exc:
        log_exception("command failed")
        print(f"vit-desktop: {exc.one_line()}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("vit-desktop: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line here, the traceback in the log
        path = log_exception("unexpected error")
        reason = " ".join(str(exc).split())
        print(f"vit-desktop: unexpected error: {type(exc).__name__}: {reason} (details in {path})",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE


def main(argv: Iterable[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ensure_std_streams()
    setup_logging()
    # People get one clear line per problem; library warnings (Pillow on odd files, torch
    # notes) go to the log, not to the terminal.
    logging.captureWarnings(True)
    if argv and argv[0] in ("--self-test", "--self-test-qt-probe"):
        from .selftest import main as self_test

        return self_test(argv)
    if argv and (argv[0] in COMMANDS or argv[0] in ("-h", "--help", "--version")):
        return run_cli(argv)
    # No command: the window, with any image paths opened in it ("Open with").
    from .app_launch import launch_gui

    return launch_gui(argv)


def gui_main() -> int:
    ensure_std_streams()
    setup_logging()
    logging.captureWarnings(True)  # warnings go to the log, as with `vit-desktop`
    from .app_launch import launch_gui

    return launch_gui(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
