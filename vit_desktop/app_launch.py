"""Starting the window: first make sure there is a screen to open it on.

Without a display, Qt would abort with a platform-plugin error; we say so in one line and
point to the command line instead.
"""

from __future__ import annotations

import os
import sys

HEADLESS_MESSAGE = (
    "vit-desktop: no display found (DISPLAY / WAYLAND_DISPLAY unset), so the window cannot "
    "open; use the command line instead, e.g. `vit-desktop classify PHOTO.jpg` "
    "(`vit-desktop --help` lists the commands)"
)


def display_available(env: dict[str, str] | None = None, platform: str | None = None) -> bool:
    env = dict(os.environ if env is None else env)
    platform = platform or sys.platform
    if env.get("QT_QPA_PLATFORM", "").split(":")[0] in ("offscreen", "minimal", "vnc"):
        return True
    if platform.startswith(("win", "darwin")) or platform == "cygwin":
        return True
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def _say(text: str) -> None:
    stream = sys.stderr or sys.stdout
    if stream is not None:
        stream.write(text + "\n")


def launch_gui(argv: list[str]) -> int:
    if any(a == "--screenshot" or a.startswith("--screenshot=") for a in argv):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"  # renders without a screen by design
    if not display_available():
        _say(HEADLESS_MESSAGE)
        return 2
    try:
        from .ui.app import run_app  # noqa: PLC0415 (the window arrives with the app issue)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("vit_desktop.ui"):
            _say(
                "vit-desktop: the desktop window is not in this build yet; use the command "
                "line: `vit-desktop classify PHOTO.jpg` (`vit-desktop --help`)"
            )
            return 2
        raise
    return run_app(argv)
