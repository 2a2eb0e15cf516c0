"""Hugging Face ViT and DeiT classifiers (folders written by ``save_pretrained``, their
pytorch_model.bin, a lone weights file) open with ``transformers``' own logits, attention,
labels and image processing, and almost-right folders are refused in one line."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import (  # noqa: E402
    DeiTConfig,
    DeiTForImageClassification,
    DeiTForImageClassificationWithTeacher,
    DeiTImageProcessor,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
    ViTModel,
)

from vit_desktop.core.checkpoints import load_checkpoint
from vit_desktop.core.classifier import load_classifier
from vit_desktop.core.errors import CheckpointError

try:  # transformers 5: the PIL image processors (the default ones resize with torchvision)
    from transformers.models.deit.image_processing_pil_deit import DeiTImageProcessorPil as DeiTPil
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil as ViTPil
except ImportError:  # transformers 4: the image processors are the PIL ones
    ViTPil, DeiTPil = ViTImageProcessor, DeiTImageProcessor

NAMES = ["tabby", "tiger", "lynx", "ocelot", "serval"]
IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
MODELS = {
    "vit": (ViTConfig, ViTForImageClassification),
    "deit": (DeiTConfig, DeiTForImageClassification),
    "deit-teacher": (DeiTConfig, DeiTForImageClassificationWithTeacher),
}


@pytest.fixture(scope="module")
def photo():
    """A 300×200 colour gradient with noise: not square, so squash and crop both matter."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:200, 0:300]
    arr = np.stack([xx * 255 / 299, yy * 255 / 199, (xx + 2 * yy) % 256], -1) + rng.normal(
        0, 25, (200, 300, 3)
    )
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _randomise(model, seed, tiny_embeddings=False):
    """Weights of every scale a trained model has (the library's init is near zero), with
    the embeddings optionally tiny so that the first LayerNorm's epsilon matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if "layernorm" in n:
                p.copy_(1 + 0.3 * r if n.endswith("weight") else 0.2 * r)
            elif n.endswith("bias"):
                p.copy_(0.2 * r)
            elif p.ndim >= 2:
                p.copy_(r / math.sqrt(p[0].numel()))
            else:
                p.copy_(r)
            if tiny_embeddings and ".embeddings." in f".{n}":
                p.mul_(1e-3)


def _make(tmp_path, kind, photo, *, processor=None, seed=0, tiny_embeddings=False, **settings):
    """A random ``kind`` classifier saved by ``save_pretrained`` (logits scaled to ±10 on the
    photo), its image processor saved beside it when given; returns the folder and the
    library's own model read back from it (eager attention)."""
    config_cls, model_cls = MODELS[kind]
    base = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=48,
                patch_size=8, id2label=dict(enumerate(NAMES)), label2id={n: i for i, n in enumerate(NAMES)})  # fmt: skip
    model = model_cls(config_cls(**{**base, **settings})).eval()
    _randomise(model, seed, tiny_embeddings)
    ref = processor or ViTPil(size={"height": model.config.image_size, "width": model.config.image_size})
    pixels = torch.from_numpy(ref(photo, return_tensors="np")["pixel_values"])
    with torch.no_grad():
        scale = 10 / model(pixels).logits.abs().max()
        for head in ("classifier", "cls_classifier", "distillation_classifier"):
            if hasattr(model, head):
                getattr(model, head).weight.mul_(scale)
                getattr(model, head).bias.mul_(scale)
    folder = tmp_path / kind
    model.save_pretrained(folder)
    if processor is not None:
        processor.save_pretrained(folder)
    return folder, model_cls.from_pretrained(folder, attn_implementation="eager").eval()


def _reference(model, pixels):
    with torch.no_grad():
        out = model(pixels, output_attentions=True)
    return out.logits, out.attentions[-1][:, :, 0]  # the CLS row of the last layer: (B, H, N)


def _compare(folder, model, photo, ref_processor, layout, measured):
    """Ours against the library: the prepared photo, logits on the same input and end to end,
    top-1, labels, and the last layer's CLS attention."""
    built = load_checkpoint(folder)
    assert built.family == "huggingface" and built.module.layout.prefix == layout
    clf = load_classifier(folder, device="cpu")
    pixels = torch.from_numpy(ref_processor(photo, return_tensors="np")["pixel_values"])
    ours_in = clf.prepare(photo).array
    d_pre = float(np.abs(ours_in - pixels[0].numpy()).max())
    want, want_att = _reference(model, pixels)
    assert want.abs().max() > 5  # logits at the scale of a trained model's
    logits, (cls, _, _) = clf.forward(pixels, "full")
    end_to_end, _ = clf.forward(torch.from_numpy(ours_in[None]), "none")
    d_logit = float((logits - want).abs().max())
    d_end = float((end_to_end - want).abs().max())
    d_att = float(np.abs(cls[:, -1] - want_att.numpy()).max())
    measured.update(prepare=d_pre, logits=d_logit, end_to_end=d_end, attention=d_att)
    assert d_pre <= 1e-5
    assert d_logit <= 1e-4 and d_end <= 1e-4
    assert d_att <= 1e-5
    result = clf.classify([photo])[0]
    top = int(want.argmax())
    assert result.top_k[0].label == model.config.id2label[top]
    assert clf.labels == tuple(model.config.id2label[i] for i in range(len(NAMES)))
    return clf


def _report(request, measured):
    print(f"\n{request.node.name}: " + ", ".join(f"{k} {v:.2e}" for k, v in measured.items()))


def test_vit_with_its_image_processor(tmp_path, photo, request):
    kwargs = dict(size={"height": 48, "width": 48}, resample=3, **IMAGENET)
    folder, model = _make(tmp_path, "vit", photo, processor=ViTImageProcessor(**kwargs), qkv_bias=True)
    measured = {}
    clf = _compare(folder, model, photo, ViTPil(**kwargs), ("CLS",), measured)
    assert clf.preprocessing.mode == "squash" and clf.preprocessing.interpolation == "bicubic"
    _report(request, measured)


def test_vit_without_qkv_bias_and_with_its_own_layer_norm_eps(tmp_path, photo, request):
    # The embeddings are tiny, so the first LayerNorm's epsilon changes the logits visibly.
    folder, model = _make(tmp_path, "vit", photo, hidden_size=96, num_attention_heads=3, num_hidden_layers=3,
                          image_size=32, qkv_bias=False, layer_norm_eps=1e-6, tiny_embeddings=True)  # fmt: skip
    measured = {}
    # No preprocessor_config.json: ViTImageProcessor's defaults at the model's size.
    clf = _compare(folder, model, photo, ViTPil(size={"height": 32, "width": 32}), ("CLS",), measured)
    assert "blocks.0.attn.qkv.bias" not in clf.module.state_dict()
    pixels = torch.from_numpy(clf.prepare(photo).array[None])
    with torch.no_grad():
        for m in clf.module.modules():
            if isinstance(m, torch.nn.LayerNorm):
                assert m.eps == 1e-6
                m.eps = 1e-12
        want = model(pixels).logits
        measured["with HF's default eps instead"] = float((clf.module(pixels) - want).abs().max())
    assert measured["with HF's default eps instead"] > 1e-2  # so the eps above was needed
    _report(request, measured)


def test_deit_with_teacher_averages_its_two_heads(tmp_path, photo, request):
    kwargs = dict(size={"height": 56, "width": 56}, crop_size={"height": 48, "width": 48}, **IMAGENET)
    folder, model = _make(tmp_path, "deit-teacher", photo, processor=DeiTImageProcessor(**kwargs),
                          num_attention_heads=2)  # fmt: skip
    measured = {}
    clf = _compare(folder, model, photo, DeiTPil(**kwargs), ("CLS", "distillation"), measured)
    assert clf.preprocessing.mode == "squash" and clf.preprocessing.resize_size == 56
    assert hasattr(clf.module, "head_dist")
    _report(request, measured)


def test_deit_without_teacher_reads_the_cls_token_only(tmp_path, photo, request):
    folder, model = _make(tmp_path, "deit", photo, hidden_size=128, patch_size=16, seed=3)
    clf = load_classifier(folder, device="cpu")
    pre = clf.preprocessing  # no preprocessor_config.json: DeiTImageProcessor's defaults, scaled
    assert pre.interpolation == "bicubic" and pre.resize_size > pre.input_size[0]
    size = {"height": pre.resize_size, "width": pre.resize_size}
    measured = {}
    _compare(folder, model, photo, DeiTPil(size=size, crop_size={"height": 48, "width": 48}),
             ("CLS", "distillation"), measured)  # fmt: skip
    assert not hasattr(clf.module, "head_dist")
    _report(request, measured)


def test_pytorch_model_bin_opens_through_its_folder(tmp_path, photo, request):
    kwargs = dict(size={"height": 48, "width": 48})
    folder, _ = _make(tmp_path, "vit", photo, processor=ViTImageProcessor(**kwargs), seed=5)
    model = ViTForImageClassification.from_pretrained(folder, attn_implementation="eager").eval()
    model.save_pretrained(folder, safe_serialization=False)
    if not (folder / "pytorch_model.bin").exists():  # transformers 5 writes safetensors only
        torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    measured = {}
    _compare(folder / "pytorch_model.bin", model, photo, ViTPil(**kwargs), ("CLS",), measured)
    _report(request, measured)


def test_a_lone_weights_file_takes_its_head_count_from_a_sidecar(tmp_path, photo, request):
    folder, model = _make(tmp_path, "vit", photo, seed=11)
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(folder / "model.safetensors", lone / "model.safetensors")
    pixels = torch.from_numpy(
        ViTPil(size={"height": 48, "width": 48})(photo, return_tensors="np")["pixel_values"]
    )
    want, _ = _reference(model, pixels)
    guessed = load_checkpoint(lone / "model.safetensors").module  # 64 wide: one head by default
    (lone / "model.config.json").write_text(json.dumps({"num_heads": 4}))
    built = load_checkpoint(lone / "model.safetensors")
    with torch.no_grad():
        measured = {"logits": float((built.module(pixels) - want).abs().max()),
                    "with the default head count": float((guessed(pixels) - want).abs().max())}  # fmt: skip
    assert built.family == "huggingface" and built.labels == tuple(f"class {i}" for i in range(5))
    assert measured["logits"] <= 1e-4 and int(built.module(pixels).argmax()) == int(want.argmax())
    assert measured["with the default head count"] > 1e-2
    _report(request, measured)


def test_a_missing_tensor_is_named_in_one_line(tmp_path, photo):
    folder, _ = _make(tmp_path, "vit", photo)
    state = load_file(folder / "model.safetensors")
    del state["vit.encoder.layer.1.output.dense.weight"]
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(folder)
    assert "vit.encoder.layer.1.output.dense.weight" in str(err.value) and "\n" not in str(err.value)


def test_an_activation_other_than_gelu_is_refused_in_one_line(tmp_path, photo):
    folder, _ = _make(tmp_path, "vit", photo)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_act": "relu"}))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(folder)
    assert "hidden_act" in str(err.value) and "relu" in str(err.value) and "\n" not in str(err.value)


def test_a_feature_extractor_without_a_classifier_is_refused(tmp_path):
    config = ViTConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128,
                       image_size=32, patch_size=8)  # fmt: skip
    ViTModel(config).save_pretrained(tmp_path / "base")
    with pytest.raises(CheckpointError, match="has no classifier"):
        load_checkpoint(tmp_path / "base")


def test_placeholder_labels_give_the_apps_numbered_labels(tmp_path, photo):
    folder, _ = _make(tmp_path, "vit", photo, image_size=32, id2label=None, label2id=None, num_labels=5)
    assert json.loads((folder / "config.json").read_text())["id2label"]["0"] == "LABEL_0"
    assert load_checkpoint(folder).labels == tuple(f"class {i}" for i in range(5))


def test_a_state_dict_in_recent_module_names_and_a_sharded_folder(tmp_path, photo):
    folder, model = _make(tmp_path, "deit-teacher", photo, image_size=32, seed=13)
    pixels = torch.from_numpy(
        ViTPil(size={"height": 32, "width": 32})(photo, return_tensors="np")["pixel_values"]
    )
    want, _ = _reference(model, pixels)
    # model.state_dict() as the running library names it (transformers 5: layers.N.attention.q_proj).
    torch.save(model.state_dict(), tmp_path / "deit.pth")
    (tmp_path / "deit.config.json").write_text(json.dumps({"num_heads": 4}))
    # save_pretrained's shards with their index.
    model.save_pretrained(tmp_path / "sharded", max_shard_size="60KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    for path in (tmp_path / "deit.pth", tmp_path / "sharded"):
        built = load_checkpoint(path)
        with torch.no_grad():
            assert float((built.module(pixels) - want).abs().max()) <= 1e-4
