"""The checks of ``vit-desktop classify``'s options, before anything is loaded: each mistake
is one :class:`.cli_maps.UsageError` line (exit 2)."""

from __future__ import annotations

import argparse

from . import cli_maps
from .cli_maps import UsageError


def check_classify(args: argparse.Namespace) -> None:
    """Every check of ``classify``'s options that needs no model (one line each, exit 2); the
    parsed values (``--input-size``, ``--explain``…) are put back in ``args``."""
    cli_maps.check_explain_options(args)
    if args.input_size is not None:
        from .core.preprocess import parse_input_size

        size = parse_input_size(args.input_size)
        if size is None:
            raise UsageError(
                f"--input-size {args.input_size!r:.40} is not a size in pixels (e.g. 384 or 384x256)"
            )
        args.input_size = size
    if args.top_k < 1:
        raise UsageError("--top-k must be at least 1")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if args.resume and (not args.output or args.format not in (None, "json")):
        raise UsageError("--resume needs --output FILE with JSON lines (not --format csv or table)")
    ray_only = {"--address": args.address, "--workers": args.workers,
                "--cpus-per-worker": args.cpus_per_worker, "--gpus-per-worker": args.gpus_per_worker}  # fmt: skip
    if args.engine != "ray":
        given = [name for name, value in ray_only.items() if value is not None]
        if given:
            raise UsageError(f"{given[0]} is for --engine ray")
        return
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if args.cpus_per_worker is not None and args.cpus_per_worker <= 0:
        raise UsageError("--cpus-per-worker must be above 0")
    if args.gpus_per_worker is not None and args.gpus_per_worker < 0:
        raise UsageError("--gpus-per-worker must be 0 or more")
    if args.device not in ("auto", "cuda" if args.gpus_per_worker else "cpu"):
        raise UsageError("with --engine ray the workers run on the GPU when --gpus-per-worker is above 0, "
                          "else on the CPU; leave --device out")  # fmt: skip
