"""Class-specific explanation figures: time of each map against a plain forward pass, the
extra peak memory of Chefer's relevance, and token occlusion's time (:mod:`vit_desktop.core.explain`)."""

from __future__ import annotations

import statistics
import subprocess
import sys

import torch
from harness import Figure, Sizes, input_size, interleaved, median_ms, paired_ratio, torchvision_vit

from vit_desktop.core.explain import explain_module

#: The class-specific maps whose cost is a backward pass (occlusion is many forwards: its own figure).
BACKWARD_METHODS = ("chefer", "gradcam", "attn-grad")


def _key(method: str) -> str:
    return f"explain_{method.replace('-', '_')}_vs_forward"


def map_time(sizes: Sizes, device: str = "cpu", suffix: str = "") -> list[Figure]:
    """Each class-specific map ÷ one plain forward pass (inference mode), ViT-B/16 (random
    weights, head re-initialised) at 224 px, batch 1, interleaved; token occlusion's time."""
    import vit_desktop.core.families  # noqa: F401  (the families describe the model's parts)

    model = torchvision_vit(sizes).to(device)
    s = input_size(sizes)
    x = torch.randn(1, 3, s, s, generator=torch.Generator().manual_seed(1)).to(device)
    target = 7

    def plain():
        with torch.inference_mode():
            return model(x).float().cpu()

    sides = [plain] + [lambda m=m: explain_module(model, x, m, target) for m in BACKWARD_METHODS]
    times = interleaved(sides, repeats=sizes.repeats, warmup=1, device=device)
    arch = "tiny ViT at 64 px" if sizes.tiny else "ViT-B/16 at 224 px"
    figs = [
        Figure(f"{_key(m)}{suffix}", round(paired_ratio(t, times[0]), 3), "x", 3.0, False,
               f"{arch}, batch 1, {device}: {median_ms(t):.0f} ms vs {median_ms(times[0]):.0f} ms "
               f"for a forward pass (medians of {sizes.repeats} interleaved runs)")
        for m, t in zip(BACKWARD_METHODS, times[1:])
    ]  # fmt: skip
    occ, fwd = interleaved([lambda: explain_module(model, x, "occlusion", target), plain],
                           repeats=max(2, sizes.repeats // 4), warmup=1, device=device)  # fmt: skip
    patches = (s // model.patch_size) ** 2
    figs.append(Figure(f"explain_occlusion_vs_forward{suffix}", round(paired_ratio(occ, fwd), 1), "x",
                       196.0, False,
                       f"{arch}, {device}: {statistics.median(occ):.2f} s for {patches} patches "
                       f"(batches of up to 32 shortened sequences); target: no worse than one forward "
                       f"pass per patch of ViT-B/16"))  # fmt: skip
    return figs


_PEAK_CHILD = """
import resource, sys, torch
from torch import nn
import vit_desktop.core.families
from torchvision.models import VisionTransformer, vit_b_16, vit_h_14
from vit_desktop.core.explain import explain_module
torch.manual_seed(0)
what, mode = sys.argv[1], sys.argv[2]
depth = int(sys.argv[3]) if len(sys.argv) > 3 else 0
if what == "tiny":
    m, s = VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=64,
                             mlp_dim=128), 64
elif what == "b16":
    m, s = vit_b_16(weights=None), 224
else:  # ViT-H/14 at 518 px (depth: fewer blocks of the same width, to extrapolate from)
    m, s = VisionTransformer(image_size=518, patch_size=14, num_layers=depth or 32, num_heads=16,
                             hidden_dim=1280, mlp_dim=5120), 518
m.eval()
nn.init.normal_(m.heads.head.weight, std=0.02)
x = torch.randn(1, 3, s, s)
with torch.inference_mode():
    m(x)  # warm: allocator pools and kernels settle before the measured run
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if mode == "plain":
        m(x)
if mode != "plain":
    explain_module(m, x, "chefer", 3)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(after - before)
"""


def _peak_growth_kb(what: str, mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PEAK_CHILD, what, mode], capture_output=True, text=True,
                         check=True)  # fmt: skip
    return int(out.stdout.split()[-1])


def chefer_peak_memory(sizes: Sizes) -> list[Figure]:
    """Extra peak memory (max RSS) of Chefer's relevance over a plain forward pass, each side
    in a fresh process after a warm-up forward: ViT-B/16 at 224 px (every block's graph kept)
    and ViT-H/14 at 518 px (one block's graph at a time, recomputed in the backward pass)."""
    figs = []
    if sizes.tiny:
        cases = [("tiny", "tiny ViT at 64 px", "b16"), ("tiny", "tiny ViT at 64 px", "h14_518")]
    else:
        cases = [("b16", "ViT-B/16 at 224 px", "b16"), ("h14", "ViT-H/14 at 518 px", "h14_518")]
    targets = {"b16": 300.0, "h14_518": 1500.0}
    for what, name, key in cases:
        plain = _peak_growth_kb(what, "plain")
        chefer = _peak_growth_kb(what, "chefer")
        extra = max(0, chefer - plain) / 1024
        figs.append(Figure(f"chefer_{key}_extra_peak_mb", round(extra, 1), "MB", targets[key], False,
                           f"{name}, CPU: peak growth {plain / 1024:.0f} MB for a forward pass, "
                           f"{chefer / 1024:.0f} MB for Chefer's map"))  # fmt: skip
    return figs


def window_figures(sizes: Sizes, folder) -> list[Figure]:
    """The window while class-specific maps are computed (explain_gui_probe.py, its own
    process): the GUI thread's longest stall, and going back to a cached class."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from app_figures import _checkpoint
    from harness import photo_like

    here = Path(__file__).resolve().parent
    ckpt = _checkpoint(sizes, folder)
    image = Path(folder) / "explain-photo.jpg"
    if not image.exists():
        photo_like(640, 480, seed=3).save(image, "JPEG", quality=90)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([sys.executable, str(here / "explain_gui_probe.py"), str(ckpt), str(image)], env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise RuntimeError(
            f"the explain window probe failed (exit {proc.returncode}): {proc.stderr[-800:]}"
        ) from None
    if "error" in out:
        raise RuntimeError(f"the explain window probe: {out['error']}")
    arch = "tiny ViT" if sizes.tiny else "ViT-B/16"
    computed = ", ".join(f"{t:.0f}" for t in out["computed_ms"])
    return [
        Figure("explain_ui_max_stall_ms", round(out["max_gap_ms"], 1), "ms", 50, False,
               f"longest gap between ticks of a 5 ms timer on the GUI thread while Relevance (Chefer) maps of "
               f"3 classes are computed in the worker, {arch} checkpoint (random weights); each took {computed} ms"),
        Figure("explain_cached_class_ms", round(max(out["cached_ms"]), 1), "ms", 50, False,
               "choosing a class whose map was computed before → its map on screen (from the window's cache, "
               "no worker call); the slowest of 4 switches"),
    ]  # fmt: skip
