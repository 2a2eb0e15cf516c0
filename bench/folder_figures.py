"""Folder throughput: our folder classification against a plain torchvision loop and a
Hugging Face ``transformers`` pipeline, on the same mixed-size JPEGs, interleaved with a bare
fp32 matrix multiply (how close the folder run comes to the machine's GEMM speed) and with
our fast mode."""

from __future__ import annotations

import statistics
import warnings
from pathlib import Path

import torch
from harness import (
    Figure,
    Sizes,
    input_size,
    interleaved,
    matmul_side,
    our_classifier,
    torchvision_transforms,
    torchvision_vit,
)
from model_figures import vit_flops
from PIL import Image

from vit_desktop.core.classifier import FOLDER_BATCH, Classifier


def _hf_pipeline(sizes: Sizes):
    """An image-classification pipeline around a ViT-B/16 of the same shape (random weights;
    ``google/vit-base-patch16-224``'s config), with the processor that checkpoint uses."""
    import transformers
    from transformers import ViTConfig, ViTForImageClassification, pipeline

    transformers.logging.set_verbosity_error()
    if sizes.tiny:
        cfg = ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                        image_size=64, patch_size=16, num_labels=10)  # fmt: skip
    else:
        cfg = ViTConfig(num_labels=1000)  # hidden 768, 12 layers, 12 heads, 224 px, patch 16
    torch.manual_seed(0)
    model = ViTForImageClassification(cfg).eval()
    proc_cls = getattr(transformers, "ViTImageProcessorFast", None) or transformers.ViTImageProcessor
    proc = proc_cls(size={"height": cfg.image_size, "width": cfg.image_size})
    pipe = pipeline("image-classification", model=model, image_processor=proc, device="cpu")
    return pipe, proc_cls.__name__


def folder_throughput(sizes: Sizes, paths: list[Path]) -> list[Figure]:
    clf = our_classifier(sizes)
    model = torchvision_vit(sizes)
    tf = torchvision_transforms(sizes)
    strs = [str(p) for p in paths]
    n = len(paths)

    def ours():
        out = list(clf.iter_classify(strs, top_k=5, attention="none"))
        assert len(out) == n and all(hasattr(r, "top_k") for r in out), "a benchmark image failed"

    def torchvision_loop():
        with torch.inference_mode():
            for p in strs:
                img = Image.open(p).convert("RGB")
                model(tf(img).unsqueeze(0)).softmax(-1).topk(5)

    # The same network's FLOPs per image, counted from its shapes; the bare GEMM side does
    # half a folder run's FLOPs (a few seconds), interleaved with the others.
    flops = vit_flops(model, input_size(sizes))
    matmul, mm_flops = matmul_side(flops * n / 2, sizes.tiny)
    fast = Classifier(clf.module, clf.preprocessing, clf.labels, clf.model_id, clf.display_name, clf.device)
    fast_why = fast.set_fast(True)

    def ours_fast():
        out = list(fast.iter_classify(strs, top_k=5, attention="none"))
        assert len(out) == n and all(hasattr(r, "top_k") for r in out), "a benchmark image failed"

    sides = [ours, torchvision_loop, matmul] + ([] if fast_why else [ours_fast])
    hf_note = ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe, proc_name = _hf_pipeline(sizes)

        def hf():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = pipe(strs, batch_size=FOLDER_BATCH, top_k=5)
            assert len(out) == n

        sides.append(hf)
        hf_note = f"transformers pipeline (batch {FOLDER_BATCH}, {proc_name})"
    except ImportError as exc:
        hf_note = f"transformers is not installed ({exc})"
        hf = None

    times = interleaved(sides, repeats=sizes.folder_repeats, warmup=0)
    at = {fn: i for i, fn in enumerate(sides)}
    # Throughput ratio = time ratio of the same work; median over the interleaved repeats.
    ips = [[n / t for t in ts] for ts in times]

    def ratio(side, other) -> float:
        return statistics.median(a / b for a, b in zip(ips[at[side]], ips[at[other]]))

    # The folder run's FLOP rate ÷ the bare GEMM's, repeat by repeat (each pair ran back to back).
    mm_rate = [mm_flops / t for t in times[at[matmul]]]
    gemm_fraction = statistics.median(i * flops / m for i, m in zip(ips[at[ours]], mm_rate))

    mean_mp = sum(Image.open(p).size[0] * Image.open(p).size[1] for p in paths) / n / 1e6
    what = f"{n} JPEGs of {sizes.min_mp:g}–{sizes.max_mp:g} MP (mean {mean_mp:.1f} MP)"
    best = {fn: statistics.median(ips[i]) for fn, i in at.items()}  # medians, img/s
    figs = [
        Figure("folder_vs_torchvision_loop", round(ratio(ours, torchvision_loop), 3), "x", 1.2, True,
               f"{what}: ours {best[ours]:.2f} img/s (batch {FOLDER_BATCH}, draft decode on threads) vs "
               f"PIL + weights.transforms() + model {best[torchvision_loop]:.2f} img/s"),
        Figure("folder_gemm_fraction", round(gemm_fraction, 3), "ratio", 0.90, True,
               f"{what}: ours {best[ours]:.2f} img/s × {flops / 1e9:.1f} GFLOP per image (counted from the "
               f"shapes) = {best[ours] * flops / 1e9:.0f} GFLOP/s vs fp32 {'256' if sizes.tiny else '2048'}² "
               f"torch.mm {statistics.median(mm_rate) / 1e9:.0f} GFLOP/s, interleaved in the same run"),
    ]  # fmt: skip
    if hf is not None:
        figs.append(Figure("folder_vs_hf_pipeline", round(ratio(ours, hf), 3), "x", 1.2, True,
                           f"{what}: ours {best[ours]:.2f} img/s vs {hf_note} {best[hf]:.2f} img/s; both run "
                           "the same network near the machine's GEMM speed in float32"))  # fmt: skip
        if fast_why:
            figs.append(Figure("folder_fast_vs_hf_pipeline", None, "x", None, True,
                               f"fast mode is not available here: {fast_why}"))  # fmt: skip
        else:
            figs.append(Figure("folder_fast_vs_hf_pipeline", round(ratio(ours_fast, hf), 3), "x", None, True,
                               f"ours in fast mode ({str(fast.dtype).replace('torch.', '')}, off by default) "
                               f"{best[ours_fast]:.2f} img/s vs the pipeline {best[hf]:.2f} img/s"))  # fmt: skip
    else:
        figs.append(Figure("folder_vs_hf_pipeline", None, "x", 1.2, True, hf_note))
        figs.append(Figure("folder_fast_vs_hf_pipeline", None, "x", None, True, hf_note))
    return figs
