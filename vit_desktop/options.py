"""The window's command-line options, defined once: the window parses them and
``vit-desktop --help`` lists them beside the subcommands.  Torch- and Qt-free."""

from __future__ import annotations

import argparse

from .core.defaults import DEVICE_CHOICES


def add_window_options(p: argparse.ArgumentParser | argparse._ArgumentGroup, images: bool = True) -> None:
    if images:
        p.add_argument("images", nargs="*", help="images or folders to open")
    p.add_argument("--model", help="catalog id or checkpoint path (default: the last one used)")
    p.add_argument(
        "--device", choices=DEVICE_CHOICES, help="where the model runs (default: the last one used)"
    )
    p.add_argument("--explain", metavar="LABEL",
                   help="show why the image on screen is LABEL: its class-specific map (Relevance, Chefer et al.)")  # fmt: skip
    p.add_argument("--screenshot", metavar="OUT.png",
                   help="render the window offscreen once every image has its result, save a PNG, exit")  # fmt: skip


def window_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vit-desktop", description="Open the window.")
    add_window_options(p)
    p.add_argument("--settings", metavar="FILE.ini", help=argparse.SUPPRESS)
    return p
