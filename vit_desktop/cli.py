"""``vit-desktop``: the app (no arguments) and the command line (subcommands).

Exit status: 0 all good, 1 some images failed, 2 usage, model or weights errors.  Errors
are one clear line on stderr; tracebacks go to the log file only.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from . import __version__, cli_maps, cli_options, cli_train
from .cli_maps import UsageError as _UsageError
from .core.defaults import DEVICE_CHOICES
from .core.export import FORMATS
from .core.text import display
from .logs import ensure_std_streams, keep_terminal_for_our_lines, log_exception, setup_logging
from .options import add_window_options

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
COMMANDS = ("classify", "models", "download", "evaluate-maps", "train")
ENGINES = ("local", "ray")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="vit-desktop",
        usage="%(prog)s [IMAGE ...] [--model M] [--device D] [--screenshot OUT.png]\n"
        "       %(prog)s {classify,models,download,evaluate-maps} ...",
        description="Classify images with Vision Transformers and see where they looked. "
        "With no command, opens the app (with any IMAGE files or folders given).",
    )
    p.add_argument("--version", action="version", version=f"vit-desktop {__version__}")
    p.add_argument("--self-test", action="store_true",
                   help="check this installation (imports, Qt, the demo model, devices, caches), "
                   "print a short report and exit non-zero on any failure")  # fmt: skip
    add_window_options(p.add_argument_group("the window (no command)"), images=False)
    sub = p.add_subparsers(dest="command", parser_class=_Parser, prog="vit-desktop")

    c = sub.add_parser("classify", help="classify images and folders")
    c.add_argument("paths", nargs="+", metavar="SOURCE",
                   help="image files, folders, list files (.txt: one path a line, relative to the "
                   "list's folder) or quoted globs ('photos/**/*.jpg')")  # fmt: skip
    c.add_argument("--model", default=None, help="catalog id or checkpoint path (default: "
                   "ViT-B/16 when its weights are cached, else demo-shapes)")  # fmt: skip
    c.add_argument(
        "--labels",
        metavar="FILE",
        help="labels for a checkpoint (.txt one per line, or .json) instead of NAME.labels.txt next to it",
    )
    c.add_argument("--top-k", type=int, default=5)
    c.add_argument("--format", choices=FORMATS, default=None,
                   help="default: table on a terminal, json otherwise")  # fmt: skip
    c.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    c.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    c.add_argument("--recursive", action="store_true", help="walk sub-folders too")
    c.add_argument("--attention-out", metavar="DIR", help="write NAME.overlay.png per image")
    c.add_argument("--no-attention", action="store_true",
                   help="skip attention (faster; attention_peak is null)")  # fmt: skip
    c.add_argument("--output", metavar="FILE", help="write results here instead of stdout")
    c.add_argument("--resume", action="store_true",
                   help="--output already holds records (JSON lines): classify only the images it "
                   "has none for and append theirs (the default with --engine ray)")  # fmt: skip
    c.add_argument("--offline", action="store_true", help="never download weights")
    c.add_argument(
        "--input-size",
        metavar="PX",
        help="run the model at another input size (384, or 384x256 "
        "for width x height): position embeddings resampled; accuracy may change",
    )
    c.add_argument("--fast", action="store_true",
                   help="fast mode: bfloat16 on CPUs that support it, float16 on a GPU; about 2x "
                   "faster, probabilities differ slightly from float32")  # fmt: skip
    r = c.add_argument_group("many machines (--engine ray; needs pip install 'vit-desktop[cluster]')")
    r.add_argument("--engine", choices=ENGINES, default="local",
                   help="local: this process (default); ray: a pool of workers on a Ray cluster, "
                   "or on a Ray started on this machine")  # fmt: skip
    r.add_argument("--address", metavar="ADDR",
                   help="the Ray cluster to join (auto, ray://HOST:PORT); default: start Ray here")  # fmt: skip
    r.add_argument("--workers", type=int, default=None, metavar="N",
                   help="model replicas (default: as many as the cluster has room for)")  # fmt: skip
    r.add_argument("--cpus-per-worker", type=float, default=None, metavar="C",
                   help="CPUs each worker holds (default 1): its compute threads, or decode "
                   "threads for a GPU worker")  # fmt: skip
    r.add_argument("--gpus-per-worker", type=float, default=None, metavar="G",
                   help="GPUs each worker holds (default 0: the workers run on CPUs; 0.5: two share one)")  # fmt: skip

    cli_maps.add_explain_options(c)
    cli_maps.add_evaluate_maps(sub)
    cli_train.add_train(sub)
    m = sub.add_parser("models", help="list the models")
    m.add_argument("--json", action="store_true")

    d = sub.add_parser("download", help="download a model's weights into the cache")
    d.add_argument("model_id", metavar="ID")
    return p


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
    cli_options.check_classify(args)
    if args.engine == "ray":
        from .core import ray_engine

        ray_engine.import_ray()  # without Ray: one line saying how to install it, before anything else
    from .core import maps
    from .core.classifier import default_model_id
    from .core.export import Done, ResultWriter, open_append, open_output, read_done
    from .core.paths import iter_sources

    model = args.model or default_model_id()
    fmt = args.format or ("table" if sys.stdout and sys.stdout.isatty() and not args.output else "json")
    # A Ray job's rerun finishes what a killed one left (its output is only ever appended to).
    resume = args.resume or (args.engine == "ray" and bool(args.output) and fmt == "json")
    out_dir = Path(args.attention_out) if args.attention_out else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    if args.no_attention:
        attention = "none"
    elif out_dir:  # keep what the default map needs to be drawn
        attention = "full" if maps.DEFAULT_MAP.kind == "rollout" else "cls"
    else:
        attention = "peak"
    done = read_done(args.output, model) if resume else Done()
    if done.paths:
        print(
            f"vit-desktop: resuming: {len(done.paths)} images already in {display(args.output)}",
            file=sys.stderr,
        )
    sources = (p for p in iter_sources(args.paths, args.recursive) if not done.has(p))
    run = (_RayRun if args.engine == "ray" else _LocalRun)(args, model, attention, out_dir)
    failed = count = 0
    stream = None
    try:
        stream = (
            (open_append(args.output) if resume else open_output(args.output)) if args.output else sys.stdout
        )
        writer = ResultWriter(fmt, stream, sync_s=1.0 if args.output else None)
        for count, (obj, overlay_error) in enumerate(run.outcomes(sources), 1):
            if overlay_error:  # the classification stays in the results; the overlay is missing
                failed += 1
                print(f"vit-desktop: {_with_path(obj['path'], overlay_error)}", file=sys.stderr)
            if "error" in obj:
                failed += 1
                if fmt != "table" or stream is not sys.stdout:
                    print(f"vit-desktop: {_with_path(obj['path'], obj['error'])}", file=sys.stderr)
            writer.write(obj)
            run.progress(count)
        writer.sync()
    finally:
        if stream is not None and stream is not sys.stdout:
            stream.close()
        run.end(count)  # a Ray started here stops
    if not count and not done.paths:
        print("vit-desktop: no images found", file=sys.stderr)
        return EXIT_SOME_FAILED
    if not count:
        print(f"vit-desktop: nothing left to classify: {len(done.paths)} images already in "
              f"{display(args.output)}", file=sys.stderr)  # fmt: skip
    return EXIT_SOME_FAILED if failed or done.failed else EXIT_OK


class _LocalRun:
    """The local engine: this process, with the classifier's own decode threads."""

    def __init__(self, args: argparse.Namespace, model: str, attention: str, out_dir: Path | None) -> None:
        from .core.classifier import load_classifier

        self.args, self.attention, self.out_dir, self.total = args, attention, out_dir, 0
        self.clf = load_classifier(model, device=args.device, allow_download=not args.offline,
                                   progress=_download_progress(), fast=args.fast, labels=args.labels,
                                   input_size=args.input_size)  # fmt: skip
        self.told = _tell(self.clf.notices, 0)
        self.explainer, self.attention = cli_maps.explainer_for(args, self.clf, attention)

    def outcomes(self, sources):
        from .core.export import outcome_record

        paths = list(sources)  # known in advance: the progress line shows done/total
        self.total, clf, a = len(paths), self.clf, self.args
        for res in clf.iter_classify(paths, a.batch_size, a.top_k, self.attention):
            yield cli_maps.explained(self.explainer, res, outcome_record(res, self.out_dir, clf.max_pixels))

    def progress(self, done: int) -> None:
        _progress(done, self.total, "classified")
        self.told = _tell(self.clf.notices, self.told)  # e.g. a GPU that ran out of memory

    def end(self, count: int) -> None:
        if sys.stderr and sys.stderr.isatty() and self.total:
            sys.stderr.write("\n")


class _RayRun:
    """The Ray engine (:mod:`.core.ray_engine`): Ray's own progress bars on a terminal, then
    one closing line with what the run did."""

    def __init__(self, args: argparse.Namespace, model: str, attention: str, out_dir: Path | None) -> None:
        from .core.ray_engine import RayJob, RaySession

        job = RayJob(model=model, labels=args.labels, allow_download=not args.offline, fast=args.fast,
                     top_k=args.top_k, attention=cli_maps.attention_for(args, attention), batch_size=args.batch_size,
                     explain=tuple(args.explain or ()), targets=tuple(args.target or ()),
                     map_dir=str(args.map_out) if args.explain and args.map_out else None,
                     overlay_dir=str(out_dir) if out_dir else None, address=args.address,
                     workers=args.workers, cpus_per_worker=args.cpus_per_worker or 1.0,
                     gpus_per_worker=args.gpus_per_worker or 0.0, input_size=args.input_size,
                     progress_bars=bool(sys.stderr) and sys.stderr.isatty())  # fmt: skip
        self.session = RaySession(job, _download_progress())
        self.outcomes = self.session.classify

    def progress(self, done: int) -> None:
        pass  # Ray Data draws its own

    def end(self, count: int) -> None:
        self.session.close()
        if count:
            print(f"vit-desktop: {self.session.stats.summary()}", file=sys.stderr)


def _tell(notices: list[str], already: int) -> int:
    for note in notices[already:]:
        print(f"vit-desktop: {display(note)}", file=sys.stderr)
    return len(notices)


def _with_path(path: str, error: str) -> str:
    """``path: reason`` without repeating the file name the error already starts with."""
    path, error = display(path), display(error)
    name = os.path.basename(path)
    if name and error.startswith(name + ": "):
        error = error[len(name) + 2 :]
    return f"{path}: {error}"


def _download_progress():
    """A download's progress on a terminal; when a download starts from a plain-http mirror,
    one warning line first (also when stderr is not a terminal).  None: nothing to say."""
    from .core.catalog import plain_http_notice

    unsafe = [note] if (note := plain_http_notice()) else []
    bar = bool(sys.stderr) and sys.stderr.isatty()
    if not (bar or unsafe):
        return None

    def cb(done: int, total: int | None) -> None:
        while unsafe:
            print(f"vit-desktop: {display(unsafe.pop())}", file=sys.stderr)
        if bar:
            _progress(round(done / 1e6), round(total / 1e6) if total else None, "downloading (MB)")

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


def run_cli(argv: Sequence[str]) -> int:
    from .core.errors import VitDesktopError

    parser = build_parser()
    args = parser.parse_args(argv)
    handler = {"classify": cmd_classify, "models": cmd_models, "download": cmd_download,
               "evaluate-maps": cli_maps.cmd_evaluate_maps, "train": cli_train.cmd_train}[args.command]  # fmt: skip
    try:
        return handler(args)
    except _UsageError as exc:
        print(f"vit-desktop: error: {display(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except VitDesktopError as exc:
        log_exception("command failed")
        print(f"vit-desktop: {display(exc.one_line())}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("vit-desktop: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line here, the traceback in the log
        from .core.text import one_line

        path = log_exception("unexpected error")
        print(f"vit-desktop: unexpected error: {display(one_line(exc))} (details in {path})", file=sys.stderr)
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
        if argv[0] in COMMANDS:
            keep_terminal_for_our_lines()  # C libraries' stderr and other loggers → the log
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
