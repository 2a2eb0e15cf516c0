"""Capture overhead for the models people bring: a timm ViT-S/16 and a Hugging Face ViT-B/16,
each opened by the app from the files its own library saves, against that library's own plain
forward on the same input (random weights: nothing is downloaded)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from harness import Figure, Sizes, interleaved, median_ms, paired_ratio

from vit_desktop.core.classifier import load_classifier


def _overhead(
    name: str, key: str, lib_model: torch.nn.Module, path: Path, sizes: Sizes, s: int
) -> list[Figure]:
    ours = load_classifier(path, device="cpu")
    x = torch.randn(1, 3, s, s, generator=torch.Generator().manual_seed(1))

    def plain():
        with torch.inference_mode():
            out = lib_model(x)
        return getattr(out, "logits", out)

    def capture():
        return ours.forward(x, mode="full")

    t_ours, t_plain = interleaved([capture, plain], repeats=sizes.repeats, warmup=2)
    ratio = paired_ratio(t_ours, t_plain)
    logits, _ = capture()
    diff = float((plain() - logits).abs().max())
    return [
        Figure(f"{key}_capture_overhead_ratio", round(ratio, 4), "x", 1.05, False,
               f"{name} batch 1, {s} px, cpu: {median_ms(t_ours):.1f} ms with capture vs {median_ms(t_plain):.1f} ms "
               f"for the library's own forward (medians of {sizes.repeats} interleaved runs); logits differ by "
               f"at most {diff:.2e} (range ±{float(logits.abs().max()):.1f})"),
    ]  # fmt: skip


def _random(model: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.normal_(0, 0.02)
    return model.eval()


def timm_overhead(sizes: Sizes) -> list[Figure]:
    import timm
    from safetensors.torch import save_file

    depth = 2 if sizes.tiny else 12
    model = _random(timm.create_model("vit_small_patch16_224", pretrained=False, depth=depth))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vit_small.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        return _overhead("timm ViT-S/16", "timm_vit_s16", model, path, sizes, 224)


def hf_overhead(sizes: Sizes) -> list[Figure]:
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(num_hidden_layers=2 if sizes.tiny else 12, num_labels=1000)
    model = _random(ViTForImageClassification(cfg))
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        return _overhead("Hugging Face ViT-B/16", "hf_vit_b16", model, Path(tmp), sizes, 224)
