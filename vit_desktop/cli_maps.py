"""The command line's explanation maps: ``classify --explain`` and ``evaluate-maps``.

Parsing and printing only (imported by :mod:`.cli` at start-up, so nothing heavy at the top);
the work is :mod:`.core.map_eval`'s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .core.defaults import DEVICE_CHOICES
from .core.text import display, json_safe

#: :data:`.core.explain.METHODS`, here without importing torch (a test keeps them equal).
METHOD_NAMES = ("attention", "rollout", "chefer", "gradcam", "attn-grad", "occlusion")
EXIT_OK, EXIT_SOME_FAILED = 0, 1


class UsageError(Exception):
    """Bad options or arguments: one line, exit status 2."""


def _names(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _methods(text: str, option: str) -> list[str]:
    methods = list(dict.fromkeys(_names(text)))
    for m in methods:
        if m not in METHOD_NAMES:
            raise UsageError(
                f"{option}: unknown explanation method {m!r}; choose from {', '.join(METHOD_NAMES)}"
            )
    if not methods:
        raise UsageError(f"{option} needs at least one method ({', '.join(METHOD_NAMES)})")
    return methods


def _writable_folder(text: str, option: str) -> Path:
    """``text`` as a folder that exists (made here) and can be written, or a UsageError."""
    folder = Path(text)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{option} {display(text)}: cannot make the folder: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {display(text)}: the folder cannot be written")
    return folder


# -- classify --explain -------------------------------------------------------------------------


def add_explain_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("explanations (JSON lines)")
    g.add_argument("--explain", metavar="METHOD[,METHOD...]",
                   help=f"add each image's maps to its record as `explanations`: {', '.join(METHOD_NAMES)}; "
                   "chefer, gradcam, attn-grad and occlusion explain one class each")  # fmt: skip
    g.add_argument("--target", metavar="T[,T...]",
                   help="the classes to explain: top1 (default), top2, ..., a label or a class index")  # fmt: skip
    g.add_argument("--map-out", metavar="DIR",
                   help="write each raw map (patch grid, float32) as NAME.METHOD[.INDEX].npy here")  # fmt: skip


def check_explain_options(args: argparse.Namespace) -> None:
    """Checks ``--explain``/``--target``/``--map-out`` (before any model is loaded) and puts
    them in ``args`` parsed: a list of methods, a list of targets, a folder or None."""
    if not args.explain:
        given = [o for o, v in (("--target", args.target), ("--map-out", args.map_out)) if v]
        if given:
            raise UsageError(f"{given[0]} needs --explain METHOD")
        args.explain = None
        return
    args.explain = _methods(args.explain, "--explain")
    args.target = _names(args.target) or ["top1"]
    if args.format not in (None, "json"):
        raise UsageError("--explain adds to JSON lines: leave out --format csv or table")
    args.format = "json"
    args.map_out = _writable_folder(args.map_out, "--map-out") if args.map_out else None


class _Explainer:
    def __init__(self, args: argparse.Namespace, clf) -> None:
        from .core.map_eval import check_request

        self.clf, self.methods, self.targets, self.map_out = clf, args.explain, args.target, args.map_out
        try:
            check_request(clf, self.methods, self.targets)  # one line before any image
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    def __call__(self, res, outcome: tuple[dict, str | None]) -> tuple[dict, str | None]:
        from .core.map_eval import add_explanations

        obj, problem = outcome
        return obj, add_explanations(self.clf, res, obj, problem, self.methods, self.targets, self.map_out)


def explainer_for(args: argparse.Namespace, clf, attention: str):
    """(a callable that adds ``explanations`` to an outcome, or None without ``--explain``;
    the attention mode to classify with, :func:`attention_for`)."""
    if not args.explain:
        return None, attention
    return _Explainer(args, clf), attention_for(args, attention)


def attention_for(args: argparse.Namespace, attention: str) -> str:
    """The attention mode to classify with: class-agnostic maps reuse what the forward pass
    captured, so they need all of it."""
    if args.explain and attention in ("peak", "cls") and set(args.explain) & {"attention", "rollout"}:
        return "full"
    return attention


def explained(explainer, res, outcome: tuple[dict, str | None]) -> tuple[dict, str | None]:
    return outcome if explainer is None else explainer(res, outcome)


# -- evaluate-maps --------------------------------------------------------------------------------


def add_evaluate_maps(sub) -> None:
    e = sub.add_parser("evaluate-maps", help="score explanation maps on a folder of images (and masks)",
                       description="Per method: mean deletion and insertion AUC (and a random patch order's), "
                       "and with NAME.mask.png beside the images (class index + 1 per pixel, 0 background) "
                       "pointing-game accuracy and mIoU of the map thresholded at its mean. "
                       "See docs/explanations.md.")  # fmt: skip
    e.add_argument(
        "paths", nargs="+", metavar="FOLDER", help="folders, image files, list files or quoted globs"
    )
    e.add_argument("--model", default=None, help="catalog id or checkpoint path (default: as classify)")
    e.add_argument("--labels", metavar="FILE", help="labels for a checkpoint, as classify")
    e.add_argument("--methods", default=",".join(METHOD_NAMES), metavar="METHOD[,METHOD...]",
                   help=f"default: all of {', '.join(METHOD_NAMES)}")  # fmt: skip
    e.add_argument("--step", type=float, default=0.05, help="share of the patches per step (default 0.05)")
    e.add_argument("--seed", type=int, default=0, help="the random order's seed (default 0)")
    e.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    e.add_argument("--recursive", action="store_true", help="walk sub-folders too")
    e.add_argument("--offline", action="store_true", help="never download weights")
    e.add_argument("--json", action="store_true", help="print the scores as one JSON object")


def _progress_line(done: int, total: int) -> None:
    if sys.stderr and sys.stderr.isatty():
        sys.stderr.write(f"\revaluated: {done}/{total}")
        sys.stderr.flush()


def cmd_evaluate_maps(args: argparse.Namespace) -> int:
    methods = _methods(args.methods, "--methods")
    if not (0.0 < args.step <= 1.0):
        raise UsageError("--step must be above 0 and at most 1 (e.g. 0.05)")
    from .core.classifier import load_classifier
    from .core.demo.samples import is_mask_path
    from .core.loading import default_model_id
    from .core.map_eval import check_methods, evaluate_maps
    from .core.paths import iter_sources

    paths = [p for p in iter_sources(args.paths, args.recursive) if not is_mask_path(p)]
    if not paths:
        print("vit-desktop: no images found", file=sys.stderr)
        return EXIT_SOME_FAILED
    clf = load_classifier(args.model or default_model_id(), device=args.device, allow_download=not args.offline,
                          labels=args.labels)  # fmt: skip
    try:
        check_methods(clf, methods)
    except ValueError as exc:
        raise UsageError(f"--methods: {exc}") from None
    tty = bool(sys.stderr) and sys.stderr.isatty()

    def on_image(done: int, path: str, error: str | None) -> None:
        if error:
            lead = "\n" if tty else ""
            print(f"{lead}vit-desktop: {display(path)}: {display(error)}", file=sys.stderr)
        _progress_line(done, len(paths))

    scores = evaluate_maps(clf, paths, methods, step=args.step, seed=args.seed, on_image=on_image)
    if tty:
        sys.stderr.write("\n")
    if args.json:
        obj = scores.to_dict()
        obj["failures"] = [{"path": json_safe(p), "error": json_safe(e)} for p, e in scores.failures]
        print(json.dumps(obj, indent=1, ensure_ascii=False))
    else:
        print("\n".join(display(line) for line in scores.table().splitlines()))
    if not scores.images:
        print("vit-desktop: no image could be scored", file=sys.stderr)
    return EXIT_SOME_FAILED if scores.failures or not scores.images else EXIT_OK
