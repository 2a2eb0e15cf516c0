"""Figures of the app as a person meets it: start-up, a large JPEG dropped on the window
while the layer slider moves, and memory over a long session.  Each runs in its own
process, so nothing this harness imported or cached counts."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from harness import Figure, Sizes, torchvision_vit

HERE = Path(__file__).resolve().parent


def _demo_image(folder: Path) -> Path:
    import numpy as np

    from vit_desktop.core.demo.shapes import generate

    path = folder / "star.png"
    if not path.exists():
        generate(np.random.default_rng(8), label=8, size=(640, 480)).image.save(path)
    return path


def startup(sizes: Sizes, folder: Path) -> list[Figure]:
    """``python -m vit_desktop --screenshot`` on the demo model and one image, with
    ``VIT_DESKTOP_TRACE``: times from just before the process is spawned."""
    img = _demo_image(folder)
    shown, first, torch_early = [], [], []
    warmup = 0 if sizes.tiny else 1  # a first run warms the disk cache and is not counted
    for i in range(sizes.startup_runs + warmup):
        with tempfile.TemporaryDirectory(prefix="vit-bench-start-") as tmp:
            trace = os.path.join(tmp, "trace.txt")
            env = dict(os.environ, QT_QPA_PLATFORM="offscreen", VIT_DESKTOP_TRACE=trace)
            t0 = time.time()
            proc = subprocess.run([sys.executable, "-m", "vit_desktop", "--screenshot", os.path.join(tmp, "s.png"),
                                   "--model", "demo-shapes", str(img)], env=env, capture_output=True, text=True,
                                  timeout=300)  # fmt: skip
            events = {}
            if os.path.exists(trace):
                for line in Path(trace).read_text().splitlines():
                    parts = line.split()
                    events[parts[0]] = (float(parts[1]), parts[2:])
        if proc.returncode != 0 or "window_shown" not in events or "first_prediction_drawn" not in events:
            raise RuntimeError(
                f"the app did not start cleanly (exit {proc.returncode}): {proc.stderr[-500:]}"
            )
        if i < warmup:
            continue
        shown.append((events["window_shown"][0] - t0) * 1000)
        first.append((events["first_prediction_drawn"][0] - t0) * 1000)
        torch_early.append("torch_imported=True" in events["window_shown"][1])
    note_t = "torch not yet imported" if not any(torch_early) else "torch already imported (!)"
    runs = f"median of {len(shown)} runs" + (" after a warm-up run" if warmup else "")
    return [
        Figure("window_shown_ms", round(statistics.median(shown)), "ms", 1000, False,
               f"spawn → main window shown, {note_t} when it appears; {runs}"),
        Figure("first_prediction_ms", round(statistics.median(first)), "ms", 3000, False,
               f"spawn → first demo-shapes prediction drawn over a 640×480 image; {runs}"),
    ]  # fmt: skip


def _checkpoint(sizes: Sizes, folder: Path) -> Path:
    """A user checkpoint of torchvision ViT-B/16 (random weights) the window loads by path."""
    name = "tiny_vit.pth" if sizes.tiny else "vit_b_16_random.pth"
    path = folder / name
    if not path.exists():
        torch.save(torchvision_vit(sizes).state_dict(), path)
        if sizes.tiny:  # width 64 is not a standard ViT: say the number of heads
            (folder / "tiny_vit.config.json").write_text(json.dumps({"num_heads": 2}))
    return path


def window_figures(sizes: Sizes, folder: Path, image: Path) -> list[Figure]:
    ckpt = _checkpoint(sizes, folder)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, str(HERE / "gui_probe.py"), str(ckpt), str(image), str(sizes.drops),
                           str(sizes.slider_after_s)], env=env, capture_output=True, text=True,
                          timeout=900)  # fmt: skip
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise RuntimeError(
            f"the window probe failed (exit {proc.returncode}): {proc.stderr[-800:]}"
        ) from None
    if "error" in out:
        raise RuntimeError(f"the window probe: {out['error']} {out.get('errors')}")
    bare = statistics.median(out["bare_ms"])
    drop = statistics.median(out["drop_ms"])
    core = statistics.median(out["core_ms"])
    sharp = statistics.median(out["sharp_ms"]) if out.get("sharp_ms") else None
    from PIL import Image

    with Image.open(image) as im:
        mp = im.size[0] * im.size[1] / 1e6
    arch = "tiny ViT" if sizes.tiny else "ViT-B/16"
    sharp_note = (f"the sharp screen copy in its place {sharp:.0f} ms after the drop ({sharp / bare:.2f}× the bare "
                  f"forward); medians of {len(out['sharp_ms'])} drops" if sharp is not None
                  else "no sharp copy followed (the draft was already as large as the screen copy)")  # fmt: skip
    return [
        Figure("large_jpeg_to_result_ratio", round(drop / bare, 3), "x", 1.3, False,
               f"{mp:.0f} MP JPEG dropped on the window → result drawn from the draft decode {drop:.0f} ms; "
               f"bare {arch} forward {bare:.0f} ms; our core path alone (decode, preprocess, forward with capture) "
               f"{core:.0f} ms = {core / bare:.2f}×; medians of {len(out['drop_ms'])} drops"),
        Figure("large_jpeg_window_share", round(drop / core, 3), "x", 1.1, False,
               f"drop → result drawn {drop:.0f} ms ÷ the core path alone {core:.0f} ms (decode at the draft scale, "
               "preprocess, forward with capture: work that cannot overlap, each step needing the one before); "
               "what the window adds to it"),
        Figure("large_jpeg_sharp_ms", None if sharp is None else round(sharp), "ms", None, False, sharp_note),
        Figure("ui_max_stall_ms", round(out["max_gap_ms"], 1), "ms", 35, False,
               f"longest gap between ticks of a 5 ms timer on the GUI thread over {sizes.drops + 1} drops of the "
               f"{mp:.0f} MP JPEG, the layer slider ({out['layers']} layers) moving every 30 ms throughout and "
               f"{sizes.slider_after_s:g} s after each result"),
    ]  # fmt: skip


_RSS_CHILD = r"""
import gc, json, os, sys
import numpy as np
from vit_desktop.core import maps
from vit_desktop.core.classifier import load_classifier
from vit_desktop.core.demo.shapes import generate

folder, n1, n2 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(5)
paths = []
for i in range(min(40, n1)):
    p = os.path.join(folder, f"s{i}.jpg")
    generate(rng).image.save(p, quality=90)
    paths.append(p)

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

clf = load_classifier("demo-shapes", device="cpu")
done, marks = 0, {}
while done < n2:
    chunk = [paths[(done + j) % len(paths)] for j in range(10)]
    if (done // 10) % 2 == 0:  # the window: one image at a time, full capture, the default map
        for p in chunk:
            (res,) = clf.classify([p], top_k=20, attention="full")
            maps.compute(res.attention, maps.DEFAULT_MAP)
    else:  # a folder: the background job
        for res in clf.iter_classify(chunk, top_k=20, attention="full"):
            maps.compute(res.attention, maps.DEFAULT_MAP)
    done += len(chunk)
    if done in (n1, n2):
        gc.collect()
        marks[done] = rss_mb()
print(json.dumps(marks))
"""


def rss_growth(sizes: Sizes) -> list[Figure]:
    n1, n2 = sizes.rss_counts
    with tempfile.TemporaryDirectory(prefix="vit-bench-rss-") as tmp:
        proc = subprocess.run([sys.executable, "-c", _RSS_CHILD, tmp, str(n1), str(n2)], capture_output=True,
                              text=True, timeout=900)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"the memory run failed: {proc.stderr[-800:]}")
    marks = json.loads(proc.stdout.strip().splitlines()[-1])
    a, b = marks[str(n1)], marks[str(n2)]
    return [
        Figure("rss_growth_ratio", round(b / a, 4), "x", 1.05, False,
               f"resident memory {a:.0f} MB after {n1} images, {b:.0f} MB after {n2} (demo-shapes, full "
               "capture, default map computed; alternating single images and 10-image folder runs)"),
    ]  # fmt: skip
