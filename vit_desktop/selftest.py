"""``vit-desktop --self-test``: can this installation run?  A short report in seconds.

Checks the imports, that Qt starts on this platform (in a child process: a Qt platform
plugin that cannot load aborts the process it is in), that the shipped demo model names a
freshly drawn shape correctly with its attention on the shape, which devices work (the
demo model runs on each one available), and that the weights cache and the log folder are
writable.  Exit status 0 when every check passed, 1 otherwise.  The report goes to stdout
and to the log file (a windowed build has no console).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .core.text import brief
from .logs import get_logger, log_dir

OK, FAIL, NOTE = "ok", "FAIL", "note"
QT_PROBE_FLAG = "--self-test-qt-probe"
QT_PROBE_TIMEOUT_S = 60.0

# The demo image: a star (class 8) drawn from seed 1 at 500×400 px.  Any sample the shipped
# model gets right would do; this one is also what tests/ui/test_real_window.py opens.
DEMO_SEED, DEMO_LABEL, DEMO_SIZE = 1, 8, (500, 400)

log = get_logger("selftest")


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # OK, FAIL or NOTE (informational, not a failure)
    detail: str


# -- the checks --------------------------------------------------------------------------------


def check_imports() -> Check:
    import importlib

    versions = []
    for module, label in (("torch", "torch"), ("torchvision", "torchvision"), ("PySide6", "PySide6"),
                          ("numpy", "numpy"), ("PIL", "Pillow"), ("safetensors", "safetensors")):  # fmt: skip
        try:
            mod = importlib.import_module(module)
        except Exception as exc:  # ImportError, or a shared library that failed to load
            return Check("imports", FAIL, f"{label}: {type(exc).__name__}: {_one_line(exc)}")
        versions.append(f"{label} {getattr(mod, '__version__', '?')}")
    try:
        for module in ("PySide6.QtCore", "PySide6.QtGui", "PySide6.QtWidgets",
                       "vit_desktop.core.classifier", "vit_desktop.ui.app"):  # fmt: skip
            importlib.import_module(module)
    except Exception as exc:
        return Check("imports", FAIL, f"{module}: {type(exc).__name__}: {_one_line(exc)}")
    return Check("imports", OK, ", ".join(versions))


def start_qt_probe(out: Path) -> subprocess.Popen:
    """The probe runs in a child process of this same program (frozen or not)."""
    if getattr(sys, "frozen", False):
        cmd = [sys.executable, QT_PROBE_FLAG, str(out)]
    else:
        cmd = [sys.executable, "-m", "vit_desktop", QT_PROBE_FLAG, str(out)]
    flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            creationflags=flags)  # fmt: skip


def finish_qt_probe(proc: subprocess.Popen, out: Path) -> Check:
    try:
        _, err = proc.communicate(timeout=QT_PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return Check("qt platform", FAIL, f"Qt did not start within {QT_PROBE_TIMEOUT_S:.0f} s")
    try:
        info = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        lines = [ln.strip() for ln in err.decode("utf-8", "replace").splitlines() if ln.strip()]
        why = "; ".join(ln for ln in lines if "qt.qpa" in ln or "platform plugin" in ln.lower())
        why = why or (lines[-1] if lines else f"exit status {proc.returncode}")
        return Check("qt platform", FAIL, f"Qt could not start: {why[:300]} (README: Troubleshooting)")
    screens = info["screens"]
    shown = f"{len(screens)} screen{'s' if len(screens) != 1 else ''}" + (
        f" ({', '.join(screens)})" if screens else ""
    )
    icon = "app icon loads" if info["icon_sizes"] else "the app icon did not load"
    detail = f"{info['platform']}, {shown}, Qt {info['qt']}, {icon}"
    if not info["icon_sizes"]:
        return Check("qt platform", FAIL, detail)
    if not info["display"]:
        return Check("qt platform", NOTE, f"no display here (DISPLAY/WAYLAND_DISPLAY unset): the window "
                     f"cannot open; Qt itself works ({detail})")  # fmt: skip
    return Check("qt platform", OK, detail)


def qt_probe(out: str) -> int:
    """Child side: start Qt's GUI application on this platform and say what it found."""
    from .app_launch import display_available

    display = display_available()
    if not display:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6 import __version__ as qt_version
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "vit-desktop"])
    from .ui.app_icon import app_icon

    icon = app_icon()
    sizes = [s.width() for s in icon.availableSizes()] if not icon.isNull() else []
    info = {
        "platform": app.platformName(),
        "screens": [f"{s.size().width()}x{s.size().height()}" for s in app.screens()],
        "display": display,
        "icon_sizes": sizes,
        "qt": qt_version,
    }
    Path(out).write_text(json.dumps(info), encoding="utf-8")
    return 0


def _demo_sample():
    import numpy as np

    from .core.demo.shapes import generate

    return generate(np.random.default_rng(DEMO_SEED), label=DEMO_LABEL, size=DEMO_SIZE)


def classify_demo(device: str):
    """(sample, result, milliseconds) for the demo image on ``device``."""
    from .core.classifier import load_classifier

    t0 = time.perf_counter()
    clf = load_classifier("demo-shapes", device=device, allow_download=False)
    sample = _demo_sample()
    result = clf.classify(sample.image, top_k=3, attention=True)[0]
    return sample, result, (time.perf_counter() - t0) * 1000


def check_demo_model() -> Check:
    try:
        sample, res, ms = classify_demo("cpu")
    except Exception as exc:
        log.exception("self-test: demo model")
        return Check("demo model", FAIL, f"{type(exc).__name__}: {_one_line(exc)}")
    top = res.top1
    w, h = sample.full_size
    what = f"{top.label} {top.prob * 100:.0f}% on a generated {w}x{h} {sample.name} ({ms:.0f} ms)"
    if top.label != sample.name:
        return Check("demo model", FAIL, f"wrong answer: {what}")
    if res.attention_peak is None:
        return Check("demo model", FAIL, f"no attention was captured: {what}")
    x, y = res.attention_peak
    left, top_, right, bottom = sample.bbox
    if not (left <= x <= right and top_ <= y <= bottom):
        return Check("demo model", FAIL, f"attention peak ({x:.0f}, {y:.0f}) is off the shape: {what}")
    return Check("demo model", OK, f"{what}, attention on the shape")


def check_devices() -> Check:
    from .core.devices import device_status

    parts, failed = [], False
    for st in device_status():
        if not st.available:
            parts.append(f"{st.name}: not available ({st.reason})")
            continue
        if st.name == "cpu":
            parts.append(f"cpu: works ({st.reason})")
            continue
        try:
            sample, res, ms = classify_demo(st.name)
        except Exception as exc:
            log.exception("self-test: device %s", st.name)
            parts.append(f"{st.name}: FAILS ({st.reason}): {type(exc).__name__}: {_one_line(exc)}")
            failed = True
            continue
        if res.top1.label != sample.name:
            parts.append(f"{st.name}: wrong answer ({res.top1.label}) on {st.reason}")
            failed = True
        else:
            parts.append(f"{st.name}: works ({st.reason}, demo model {ms:.0f} ms)")
    return Check("devices", FAIL if failed else OK, "; ".join(parts))


def _writable(folder: Path) -> str | None:
    """None when a file can be created in ``folder`` (made if missing), else why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".self-test-", delete=True) as fh:
            fh.write(b"ok")
            fh.flush()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def check_weights_cache() -> Check:
    from .core.weights import cache_dir

    folder = cache_dir()
    why = _writable(folder)
    if why:
        return Check("weights cache", FAIL, f"{folder} is not writable ({why}); set TORCH_HOME to a "
                     "writable folder")  # fmt: skip
    free = shutil.disk_usage(folder).free / 1e9
    cached = sum(1 for p in folder.iterdir() if p.suffix in (".pth", ".pt", ".safetensors"))
    return Check(
        "weights cache", OK, f"{folder} writable, {free:.1f} GB free, {cached} weight file(s) cached"
    )


def check_log_folder() -> Check:
    folder = log_dir()
    why = _writable(folder)
    if why:
        return Check("log folder", FAIL, f"{folder} is not writable ({why})")
    return Check("log folder", OK, f"{folder} writable")


# -- the report --------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    return brief(str(exc), 300)


def _guarded(name: str, fn: Callable[[], Check]) -> Check:
    try:
        return fn()
    except Exception as exc:  # a check that breaks is a failed check, with the cause logged
        log.exception("self-test: %s", name)
        return Check(name, FAIL, f"{type(exc).__name__}: {_one_line(exc)}")


def run_checks() -> list[Check]:
    with tempfile.TemporaryDirectory(prefix="vit-desktop-self-test-") as tmp:
        out = Path(tmp) / "qt.json"
        try:  # Qt starts in a child process while this one loads torch
            probe: subprocess.Popen | None = start_qt_probe(out)
        except OSError as exc:
            probe, probe_error = None, Check("qt platform", FAIL, f"could not start the probe: {exc}")
        checks = [_guarded("imports", check_imports)]
        if checks[0].status == OK:
            checks += [_guarded("demo model", check_demo_model), _guarded("devices", check_devices)]
        checks += [_guarded("weights cache", check_weights_cache), _guarded("log folder", check_log_folder)]
        qt = _guarded("qt platform", lambda: finish_qt_probe(probe, out)) if probe else probe_error
        checks.insert(1, qt)
    return checks


def format_report(checks: Sequence[Check], seconds: float) -> str:
    frozen = "frozen build" if getattr(sys, "frozen", False) else "Python package"
    lines = [
        f"ViT Desktop {__version__} self-test: {frozen}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()}"
    ]
    width = max(len(c.name) for c in checks)
    for c in checks:
        lines.append(f"  {c.status:<4}  {c.name:<{width}}  {c.detail}")
    failed = [c for c in checks if c.status == FAIL]
    if failed:
        lines.append(f"{len(failed)} of {len(checks)} checks failed ({seconds:.1f} s)")
    else:
        lines.append(f"all {len(checks)} checks passed ({seconds:.1f} s)")
    return "\n".join(lines)


def main(argv: Sequence[str] = ()) -> int:
    if argv and argv[0] == QT_PROBE_FLAG:
        if len(argv) != 2:
            return 2
        return qt_probe(argv[1])
    if len(argv) > 1:
        (sys.stderr or sys.stdout).write("vit-desktop: --self-test takes no other arguments\n")
        return 2
    t0 = time.perf_counter()
    checks = run_checks()
    report = format_report(checks, time.perf_counter() - t0)
    log.info("self-test\n%s", report)
    if sys.stdout is not None:
        sys.stdout.write(report + "\n")
        sys.stdout.flush()
    return 1 if any(c.status == FAIL for c in checks) else 0
