"""Model-level figures: capture overhead and exactness, GEMM efficiency, fast mode, capture memory."""

from __future__ import annotations

import statistics
import subprocess
import sys

import numpy as np
import torch
from harness import (
    Figure,
    Sizes,
    input_size,
    interleaved,
    median_ms,
    our_classifier,
    paired_ratio,
    torchvision_vit,
)

from vit_desktop.core.classifier import FOLDER_BATCH, Classifier


def _share(clf: Classifier, module: torch.nn.Module) -> Classifier:
    """Our classifier around exactly this module (same weights as the plain side)."""
    return Classifier(module, clf.preprocessing, clf.labels, clf.model_id, clf.display_name, clf.device)


def attention_overhead(sizes: Sizes, device: str = "cpu", suffix: str = "") -> list[Figure]:
    model = torchvision_vit(sizes).to(device)
    ours = _share(our_classifier(sizes, device), model)
    s = input_size(sizes)
    x = torch.randn(1, 3, s, s, generator=torch.Generator().manual_seed(1))
    xd = x.to(device)

    def plain():
        with torch.inference_mode():
            return model(xd).float().cpu()

    def capture():
        return ours.forward(x, mode="full")

    t_ours, t_plain = interleaved([capture, plain], repeats=sizes.repeats, warmup=2, device=device)
    ratio = paired_ratio(t_ours, t_plain)
    logits, (cls, q, k) = capture()
    diff = float((plain() - logits).abs().max())
    kept = (cls.nbytes + q.nbytes + k.nbytes) / 1e6
    arch = "tiny ViT" if sizes.tiny else "ViT-B/16"
    return [
        Figure(f"attention_overhead_ratio{suffix}", round(ratio, 4), "x", 1.05, False,
               f"{arch} batch 1, {s} px, {device}: {median_ms(t_ours):.1f} ms vs {median_ms(t_plain):.1f} ms "
               f"(medians of {sizes.repeats} interleaved runs); keeps {kept:.1f} MB per image"),
        Figure(f"logits_max_abs_diff{suffix}", diff, "abs", 1e-5, False,
               f"logits range ±{float(logits.abs().max()):.2f} (head re-initialised, not zeros)"),
    ]  # fmt: skip


def vit_flops(model: torch.nn.Module, s: int) -> float:
    """FLOPs (2 per multiply-add) of one image's forward pass through a torchvision ViT:
    patch projection, per layer the q/k/v and output projections, QKᵀ, attention·V and the
    MLP, and the head.  Counted from the shapes: PyTorch's FlopCounterMode misses the fused
    attention kernel that ``nn.MultiheadAttention`` uses in inference."""
    p, d, m = model.patch_size, model.hidden_dim, model.mlp_dim
    layers = len(model.encoder.layers)
    n = (s // p) ** 2 + 1
    macs = (n - 1) * d * 3 * p * p  # patch projection
    macs += layers * (4 * n * d * d + 2 * n * n * d + 2 * n * d * m)
    macs += d * model.heads.head.out_features
    return 2.0 * macs


def gemm_efficiency(sizes: Sizes) -> list[Figure]:
    clf = our_classifier(sizes)
    s = input_size(sizes)
    flops = vit_flops(clf.module, s)
    batch = torch.randn(FOLDER_BATCH, 3, s, s)
    n = 256 if sizes.tiny else 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    # As many matmuls as make the same FLOPs as one batch: both samples last about as long,
    # so load elsewhere on the machine is as likely to hit either.
    reps = max(1, round(flops * FOLDER_BATCH / (2 * n**3)))

    def forward():
        clf.forward(batch, mode="none")

    def matmul():
        for _ in range(reps):
            torch.mm(a, b)

    t_fwd, t_mm = interleaved([forward, matmul], repeats=max(3, sizes.repeats // 2), warmup=1)
    fwd_rate = [flops * FOLDER_BATCH / t for t in t_fwd]
    mm_rate = [2 * n**3 * reps / t for t in t_mm]
    eff = statistics.median(f / m for f, m in zip(fwd_rate, mm_rate))
    return [
        Figure("gemm_efficiency", round(eff, 3), "ratio", 0.85, True,
               f"forward at batch {FOLDER_BATCH}: {statistics.median(fwd_rate) / 1e9:.0f} GFLOP/s "
               f"({flops / 1e9:.1f} GFLOP per image); fp32 {n}×{n} matmul: "
               f"{statistics.median(mm_rate) / 1e9:.0f} GFLOP/s"),
    ]  # fmt: skip


def fast_mode(sizes: Sizes, device: str = "cpu", suffix: str = "") -> list[Figure]:
    f32 = our_classifier(sizes, device)
    fast = _share(f32, f32.module)
    why = fast.set_fast(True)
    if why:
        return [
            Figure(f"fast_mode_speedup{suffix}", None, "x", 1.8, True, f"not available: {why}"),
            Figure(f"fast_mode_top1_agreement{suffix}", None, "ratio", 0.995, True, f"not available: {why}"),
        ]
    s = input_size(sizes)
    batch = torch.randn(FOLDER_BATCH, 3, s, s)
    one = batch[:1]
    t32, tfast = interleaved([lambda: f32.forward(batch, "none"), lambda: fast.forward(batch, "none")],
                             repeats=max(3, sizes.repeats // 2), warmup=1, device=device)  # fmt: skip
    speedup = paired_ratio(t32, tfast)
    note = (f"{str(fast.dtype).replace('torch.', '')} vs float32, folder mode (batch {FOLDER_BATCH}, attention "
            f"off, {device}): {median_ms(t32) / FOLDER_BATCH:.0f} vs {median_ms(tfast) / FOLDER_BATCH:.0f} ms per image")  # fmt: skip
    if not sizes.tiny:
        c32, cfast = interleaved([lambda: f32.forward(one, "full"), lambda: fast.forward(one, "full")],
                                 repeats=max(3, sizes.repeats // 2), warmup=1, device=device)  # fmt: skip
        note += f"; one image with full capture (the window): {paired_ratio(c32, cfast):.2f}×"
    return [Figure(f"fast_mode_speedup{suffix}", round(speedup, 3), "x", 1.8, True, note),
            fast_agreement(sizes, device, suffix)]  # fmt: skip


def fast_agreement(sizes: Sizes, device: str = "cpu", suffix: str = "") -> Figure:
    """Top-1 agreement of fast mode and float32 on freshly drawn demo images, with the
    shipped (trained) demo model: random weights would only measure near-ties."""
    from vit_desktop.core.classifier import load_classifier
    from vit_desktop.core.demo.shapes import generate

    f32 = load_classifier("demo-shapes", device=device)
    fast = _share(f32, f32.module)
    fast.set_fast(True)
    rng = np.random.default_rng([20261126, 3])
    agree = total = right = 0
    for start in range(0, sizes.agreement_images, 50):
        samples = [generate(rng) for _ in range(min(50, sizes.agreement_images - start))]
        imgs = [smp.image for smp in samples]
        a = f32.classify(imgs, top_k=1, attention="none")
        b = fast.classify(imgs, top_k=1, attention="none")
        agree += sum(x.top1.index == y.top1.index for x, y in zip(a, b))
        right += sum(x.top1.index == smp.label for x, smp in zip(a, samples))
        total += len(imgs)
    return Figure(f"fast_mode_top1_agreement{suffix}", round(agree / total, 4), "ratio", 0.995, True,
                  f"{agree} of {total} demo images (demo-shapes, float32 top-1 accuracy {right / total:.1%})")  # fmt: skip


_PEAK_CHILD = """
import resource, sys, torch
from torch import nn
from torchvision.models import VisionTransformer, vit_h_14
from vit_desktop.core.capture import AttentionCapture
torch.manual_seed(0)
if sys.argv[2] == "tiny":
    m, s = VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=64,
                             mlp_dim=128), 64
else:
    m, s = vit_h_14(weights=None, image_size=518), 518
m.eval()
nn.init.normal_(m.heads.head.weight, std=0.02)
x = torch.randn(1, 3, s, s)
with torch.inference_mode():
    m(x)  # warm: allocator pools and kernels settle before the measured run
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.argv[1] == "capture":
        with AttentionCapture(m, keep_qk=True) as cap:
            m(x)
        cls, q, k = cap.collect()
        kept = cls.nbytes + q.nbytes + k.nbytes
    else:
        m(x)
        kept = 0
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(after - before, kept)
"""


def capture_peak_memory(sizes: Sizes) -> list[Figure]:
    """Extra peak memory (max RSS) of full capture on ViT-H/14 at 518 px, each side in a
    fresh process after a warm-up forward."""

    def run(mode: str) -> tuple[int, int]:
        out = subprocess.run([sys.executable, "-c", _PEAK_CHILD, mode, sizes.name], capture_output=True,
                             text=True, check=True)  # fmt: skip
        grow, kept = out.stdout.split()
        return int(grow), int(kept)

    plain, _ = run("plain")
    cap, kept = run("capture")
    extra_mb = max(0, cap - plain) / 1024
    what = "tiny ViT at 64 px" if sizes.tiny else "ViT-H/14 at 518 px"
    return [
        Figure("vit_h14_518_capture_peak_mb", round(extra_mb, 1), "MB", 400, False,
               f"{what}: captured arrays {kept / 1e6:.0f} MB (CLS rows + float16 queries and keys); "
               f"peak growth {plain / 1024:.0f} MB without capture, {cap / 1024:.0f} MB with"),
    ]  # fmt: skip
