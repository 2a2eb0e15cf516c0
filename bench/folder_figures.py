"""Folder throughput: our folder classification against a plain torchvision loop and a
Hugging Face ``transformers`` pipeline, on the same mixed-size JPEGs, interleaved."""

from __future__ import annotations

import statistics
import warnings
from pathlib import Path

import torch
from harness import Figure, Sizes, interleaved, our_classifier, torchvision_transforms, torchvision_vit
from PIL import Image

from vit_desktop.core.classifier import FOLDER_BATCH


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

    sides = [ours, torchvision_loop]
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

    times = interleaved(sides, repeats=sizes.folder_repeats, warmup=0)
    # Throughput ratio = time ratio of the same work; median over the interleaved repeats.
    ips = [[n / t for t in ts] for ts in times]

    def ratio(other: int) -> float:
        vals = sorted(a / b for a, b in zip(ips[0], ips[other]))
        return vals[len(vals) // 2]

    mean_mp = sum(Image.open(p).size[0] * Image.open(p).size[1] for p in paths) / n / 1e6
    what = f"{n} JPEGs of {sizes.min_mp:g}–{sizes.max_mp:g} MP (mean {mean_mp:.1f} MP)"
    best = [statistics.median(v) for v in ips]  # medians, img/s
    figs = [
        Figure("folder_vs_torchvision_loop", round(ratio(1), 3), "x", 1.2, True,
               f"{what}: ours {best[0]:.2f} img/s (batch {FOLDER_BATCH}, draft decode on threads) vs "
               f"PIL + weights.transforms() + model {best[1]:.2f} img/s"),
    ]  # fmt: skip
    if len(sides) == 3:
        figs.append(Figure("folder_vs_hf_pipeline", round(ratio(2), 3), "x", 1.5, True,
                           f"{what}: ours {best[0]:.2f} img/s vs {hf_note} {best[2]:.2f} img/s"))  # fmt: skip
    else:
        figs.append(Figure("folder_vs_hf_pipeline", None, "x", 1.5, True, hf_note))
    return figs
