"""Class-specific explanations (:mod:`vit_desktop.core.explain`), each checked against a peer:

* Chefer's relevance against a straightforward implementation written here from the paper's
  formula (explicit softmax attention, retained gradients, R ← R + Ā·R with full matrices),
  on a torchvision ViT and on timm ViTs loaded into TokenViT;
* token Grad-CAM against pytorch-grad-cam's ``GradCAM`` on torchvision's ViT-B/16;
* attention × gradient against the same retained gradients;
* token occlusion against forwards of sequences with the token really removed (built here
  from the peer library's own pieces);

then every family, the API (targets, shared maps, peaks), cancelling, and that the model is
left as it was.
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

import vit_desktop.core.families  # noqa: F401  (registers the families)
from tests.helpers import (
    one_torch_thread,  # noqa: F401 (an autouse fixture)
    small_torchvision_vit,
)
from vit_desktop.core import explain as ex
from vit_desktop.core.explain_methods import occlusion_patches
from vit_desktop.core.minivit import MiniViT, MiniViTConfig
from vit_desktop.core.tokenvit import TokenViT, TokenViTConfig

TOL = 1e-5


def _relative(got: np.ndarray, want: np.ndarray) -> float:
    """The largest difference as a share of the reference map's largest value (Grad-CAM and
    attention × gradient maps can be small numbers: an absolute 1e-5 would say nothing)."""
    scale = float(np.abs(want).max())
    assert scale > 0
    return float(np.abs(np.asarray(got).reshape(-1) - np.asarray(want).reshape(-1)).max()) / scale


# -- models ---------------------------------------------------------------------------------


def _tv():
    return small_torchvision_vit(image_size=64, patch_size=8, num_layers=3, num_heads=4, hidden_dim=64)


def _timm_pair(**kw):
    """A small timm ViT with random weights and the TokenViT with its state dict (timm's names)."""
    import timm.models.vision_transformer as tv

    torch.manual_seed(3)
    args = dict(img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=4, num_classes=10)
    args.update(kw)
    timm_model = tv.VisionTransformer(**args).eval()
    nn.init.normal_(timm_model.head.weight, std=0.3)
    avg = args.get("global_pool") == "avg"
    cfg = TokenViTConfig(grid=(4, 4), patch_size=8, width=64, depth=3, heads=4, mlp_dim=256, num_classes=10,
                         cls_token=args.get("class_token", True), registers=args.get("reg_tokens", 0),
                         pos_prefix=not args.get("no_embed_class", False), pool="avg" if avg else "token",
                         final_norm=not avg, fc_norm=avg)  # fmt: skip
    ours = TokenViT(cfg).eval()
    ours.load_state_dict(timm_model.state_dict(), strict=True)
    return timm_model, ours


def _x(seed=0, size=64):
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


# -- independent references ------------------------------------------------------------------


def _tv_explicit_forward(m, x):
    """torchvision's ViT written out with explicit attention, its probabilities retained."""
    attns = []
    h = m._process_input(x)
    h = torch.cat([m.class_token.expand(1, -1, -1), h], dim=1) + m.encoder.pos_embedding
    for blk in m.encoder.layers:
        mha, y = blk.self_attention, blk.ln_1(h)
        b, n, d = y.shape
        heads = mha.num_heads
        q, k, v = F.linear(y, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(b, n, heads, d // heads).transpose(1, 2) for t in (q, k, v))
        a = torch.softmax(q @ k.transpose(-2, -1) / (d // heads) ** 0.5, dim=-1)
        a.retain_grad()
        attns.append(a)
        h = h + mha.out_proj((a @ v).transpose(1, 2).reshape(b, n, d))
        h = h + blk.mlp(blk.ln_2(h))
    return m.heads(m.encoder.ln(h)[:, 0]), attns


def _timm_explicit_forward(m, x):
    """timm's own forward on its unfused attention path, the probabilities retained where
    timm applies attention dropout to them."""
    attns = []

    def keep(_mod, _inp, out):
        out.retain_grad()
        attns.append(out)

    hooks = []
    for blk in m.blocks:
        blk.attn.fused_attn = False
        hooks.append(blk.attn.attn_drop.register_forward_hook(keep))
    try:
        logits = m(x)
    finally:
        for h in hooks:
            h.remove()
    return logits, attns


def _relevance(logits, attns, target, prefix, cls_query=True):
    """Chefer et al.: R = I; for each block R ← R + E_h[(∇A ⊙ A)⁺]·R; the query's row."""
    logits[0, target].backward()
    n = attns[0].shape[-1]
    r = torch.eye(n)
    for a in attns:
        cam = (a.grad * a).clamp(min=0).mean(dim=1)[0]
        r = r + cam @ r
    row = r[0] if cls_query else r[prefix:].mean(dim=0)
    return row[prefix:].detach().numpy()


def _attn_grad(attns, target_layer, prefix, cls_query=True):
    a = attns[target_layer]
    cam = (a.grad * a).clamp(min=0).mean(dim=1)[0]
    row = cam[0] if cls_query else cam[prefix:].mean(dim=0)
    return row[prefix:].detach().numpy()


# -- Chefer and attention × gradient ------------------------------------------------------------


@pytest.mark.parametrize("recompute", [False, True])
def test_chefer_equals_the_formula_on_torchvision(recompute):
    m, x = _tv(), _x()
    ours = ex.explain_module(m, x, "chefer", 5, recompute=recompute)
    ref_model = copy.deepcopy(m)
    want = _relevance(*_tv_explicit_forward(ref_model, x), 5, prefix=1)
    assert ours.shape == (8, 8)
    assert np.abs(ours - want.reshape(8, 8)).max() <= TOL
    assert np.ptp(ours) > 1e-3  # not a flat map: the comparison means something


@pytest.mark.parametrize("layout", ["cls", "registers-avg"])
def test_chefer_and_attn_grad_equal_the_formula_on_a_timm_vit(layout):
    kw = (
        {}
        if layout == "cls"
        else dict(class_token=False, reg_tokens=2, no_embed_class=True, global_pool="avg")
    )
    timm_model, ours = _timm_pair(**kw)
    x = _x(1, 32)
    with torch.no_grad():
        assert torch.allclose(timm_model(x), ours(x), atol=1e-5)  # the same network
    cls_query = layout == "cls"
    prefix = 1 if cls_query else 2
    assert ours.layout.query == ("cls" if cls_query else "mean")
    for recompute in (False, True):
        got = ex.explain_module(ours, x, "chefer", 7, recompute=recompute)
        logits, attns = _timm_explicit_forward(timm_model, x)
        want = _relevance(logits, attns, 7, prefix, cls_query)
        assert np.abs(got.reshape(-1) - want).max() <= TOL
    for layer in (-1, 1):
        got = ex.explain_module(ours, x, "attn-grad", 7, layer=layer)
        logits, attns = _timm_explicit_forward(timm_model, x)
        logits[0, 7].backward()
        want = _attn_grad(attns, layer, prefix, cls_query)
        assert _relative(got, want) <= TOL
        assert np.ptp(want) > 0


def test_attn_grad_single_head_and_fusions_on_torchvision():
    m, x = _tv(), _x(2)
    logits, attns = _tv_explicit_forward(copy.deepcopy(m), x)
    logits[0, 2].backward()
    pos = (attns[-1].grad * attns[-1]).clamp(min=0)[0]  # (H, N, N)
    for head, fusion, want in [(None, "mean", pos.mean(0)), (None, "max", pos.amax(0)),
                               (None, "min", pos.amin(0)), (1, "mean", pos[1])]:  # fmt: skip
        got = ex.explain_module(m, x, "attn-grad", 2, head=head, fusion=fusion)
        assert _relative(got, want[0, 1:].detach().numpy()) <= TOL


def test_chefer_recomputation_gives_the_same_map():
    m, x = _tv(), _x(4)
    kept = ex.explain_module(m, x, "chefer", 1, recompute=False)
    rebuilt = ex.explain_module(m, x, "chefer", 1, recompute=True)
    assert np.array_equal(kept, rebuilt)


# -- Grad-CAM -----------------------------------------------------------------------------------


def test_gradcam_equals_pytorch_grad_cam_on_vit_b16():
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform
    from torchvision.models import vit_b_16

    torch.manual_seed(0)
    model = vit_b_16(weights=None).eval()
    nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision's head is zeros
    x, target = _x(5, 224), 321
    ours = ex.explain_module(model, x, "gradcam", target)
    peer_model = copy.deepcopy(model)  # GradCAM's backward fills parameter gradients
    layer = peer_model.encoder.layers[-1].ln_1
    targets = [ClassifierOutputTarget(target)]
    with GradCAM(peer_model, target_layers=[layer],
                 reshape_transform=functools.partial(vit_reshape_transform, height=14, width=14)) as cam:  # fmt: skip
        shown = cam(input_tensor=x, targets=targets)  # upsampled to 224 px and scaled to [0, 1]
        acts = cam.activations_and_grads.activations[0].numpy()
        grads = cam.activations_and_grads.gradients[0].numpy()
        # Its raw cam, before scaling: compute_cam_per_layer's get_cam_image, then ReLU.
        raw = np.maximum(cam.get_cam_image(x, layer, targets, acts, grads), 0)[0]
        # Ours through the same scaling and upsampling as its forward.
        ours_shown = cam.aggregate_multi_layers([scale_cam_image(ours[None], (224, 224))[:, None, :]])
    assert ours.shape == (14, 14) and raw.shape == (14, 14)
    assert _relative(ours, raw) <= TOL
    assert np.abs(ours_shown - shown).max() <= TOL
    assert raw.max() > 0


# -- occlusion ----------------------------------------------------------------------------------


def _occluded(embed, rest, x, target, prefix):
    """full − logit with each patch token removed, from the peer's own pieces."""
    with torch.no_grad():
        tokens = embed(x)
        full = rest(tokens)[0, target]
        out = []
        for i in range(prefix, tokens.shape[1]):
            seq = torch.cat([tokens[:, :i], tokens[:, i + 1 :]], dim=1)
            out.append(float(full - rest(seq)[0, target]))
    return np.array(out, dtype=np.float32)


def test_occlusion_equals_forwards_with_the_token_removed_torchvision():
    m, x = _tv(), _x(6)

    def embed(x):
        h = m._process_input(x)
        return torch.cat([m.class_token.expand(1, -1, -1), h], dim=1) + m.encoder.pos_embedding

    def rest(t):
        return m.heads(m.encoder.ln(m.encoder.layers(t))[:, 0])

    with torch.no_grad():
        assert torch.allclose(rest(embed(x)), m(x), atol=1e-6)  # the pieces make the model
    want = _occluded(embed, rest, x, 3, 1)
    got = ex.explain_module(m, x, "occlusion", 3)
    assert np.abs(got.reshape(-1) - want).max() <= TOL
    in_fives = occlusion_patches(ex.parts_of(m), x, 3, batch_size=5)  # a last batch of 4
    assert np.abs(in_fives.numpy() - want).max() <= TOL
    assert np.ptp(want) > 1e-3


@pytest.mark.parametrize("layout", ["cls", "registers-avg"])
def test_occlusion_equals_forwards_with_the_token_removed_timm(layout):
    kw = (
        {}
        if layout == "cls"
        else dict(class_token=False, reg_tokens=2, no_embed_class=True, global_pool="avg")
    )
    timm_model, ours = _timm_pair(**kw)
    x = _x(7, 32)

    def embed(x):
        return timm_model.norm_pre(timm_model._pos_embed(timm_model.patch_embed(x)))

    def rest(t):
        return timm_model.forward_head(timm_model.norm(timm_model.blocks(t)))

    want = _occluded(embed, rest, x, 4, timm_model.num_prefix_tokens)
    got = ex.explain_module(ours, x, "occlusion", 4)
    assert np.abs(got.reshape(-1) - want).max() <= TOL


# -- every family -------------------------------------------------------------------------------


def _family_models():
    torch.manual_seed(0)
    mini = dict(image_size=32, patch_size=8, num_classes=5, embed_dim=32, depth=2, num_heads=4, mlp_dim=64)
    base = dict(grid=(4, 4), patch_size=8, width=32, depth=2, heads=4, mlp_dim=64, num_classes=5)
    return {
        "minivit pre-norm": MiniViT(MiniViTConfig(**mini, stem_channels=(8,), input_norm=True)),
        "minivit post-norm": MiniViT(MiniViTConfig(**mini, norm_first=False, final_norm=False)),
        "torchvision": small_torchvision_vit(image_size=32, patch_size=8, hidden_dim=32, num_classes=5),
        "deit distilled": TokenViT(TokenViTConfig(**base, dist_token=True, dist_head=True)),
        "vit-pytorch simple": TokenViT(
            TokenViTConfig(
                **base,
                cls_token=False,
                pos="sincos",
                pool="mean",
                patch_embed="linear",
                qkv_bias=False,
                eps=1e-5,
            )
        ),  # fmt: skip
        "hf-like registers": TokenViT(
            TokenViTConfig(**base, registers=4, eps=1e-12, qk_norm=True, layer_scale=True)
        ),  # fmt: skip
    }


def test_every_method_on_every_family_leaves_the_model_as_it_was():
    x = _x(8, 32)
    for name, model in _family_models().items():
        model.eval()
        state = {k: v.clone() for k, v in model.state_dict().items()}
        with torch.no_grad():
            before = model(x)
        for method in ex.METHODS:
            grid_map = ex.explain_module(model, x, method, 2)
            assert grid_map.shape == (4, 4) and grid_map.dtype == np.float32, (name, method)
            assert np.isfinite(grid_map).all(), (name, method)
        assert all(p.grad is None for p in model.parameters()), name
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items()), name
        for mod in model.modules():
            assert getattr(mod, "explicit", None) is None and "forward" not in mod.__dict__, name
            assert not mod._forward_hooks, name
        with torch.no_grad():
            assert torch.equal(model(x), before), name


def test_class_specific_maps_differ_between_classes():
    m, x = _tv(), _x(9)
    for method in sorted(ex.CLASS_SPECIFIC):
        a, b = ex.explain_module(m, x, method, 0), ex.explain_module(m, x, method, 1)
        assert not np.allclose(a, b), method
    assert np.array_equal(ex.explain_module(m, x, "rollout", 0), ex.explain_module(m, x, "rollout", 1))


def test_explain_under_inference_mode_and_a_model_without_parameter_gradients():
    m, x = _tv(), _x(10)
    want = ex.explain_module(m, x, "chefer", 2)
    for p in m.parameters():
        p.requires_grad_(False)
    with torch.inference_mode():
        got = ex.explain_module(m, torch.clone(x), "chefer", 2)
    assert np.array_equal(got, want)


def test_cancel_stops_between_blocks_and_batches():
    m, x = _tv(), _x(11)
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 1

    for method in ("chefer", "occlusion"):
        calls.clear()
        with pytest.raises(ex.Cancelled):
            ex.explain_module(m, x, method, 0, cancel=cancel)
        assert len(calls) == 2, method
    assert "forward" not in m.encoder.layers[0].self_attention.__dict__


def test_a_model_no_family_describes_is_refused_in_one_line():
    class Plain(nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    with pytest.raises(ValueError, match="class-specific maps are not available") as err:
        ex.explain_module(Plain(), _x(), "chefer", 0)
    assert "\n" not in str(err.value)


# -- the API ------------------------------------------------------------------------------------


def _classifier():
    from vit_desktop.core.classifier import Classifier
    from vit_desktop.core.preprocess import Preprocessing

    pre = Preprocessing(input_size=(64, 64), patch_size=8, mean=(0.5,) * 3, std=(0.5,) * 3)
    labels = ["cat", "dog", "Star", "ring", "7", "class 5", "g"]
    return Classifier(_tv(), pre, labels, "t", "t", torch.device("cpu"))


def test_resolve_target():
    clf = _classifier()
    probs = np.array([0.1, 0.3, 0.05, 0.2, 0.15, 0.12, 0.08], np.float32)
    assert ex.resolve_target(clf, probs, "top1") == 1 and ex.resolve_target(clf, probs, "TOP2") == 3
    assert ex.resolve_target(clf, probs, "dog") == 1 and ex.resolve_target(clf, probs, "star") == 2
    assert ex.resolve_target(clf, probs, "7") == 4  # a label that looks like an index is the label
    assert ex.resolve_target(clf, probs, "6") == 6 and ex.resolve_target(clf, probs, 3) == 3
    for bad, words in [("top9", "top1 … top7"), ("12", "from 0 to 6"), ("zebra", "unknown target 'zebra'")]:
        with pytest.raises(ValueError, match=words) as err:
            ex.resolve_target(clf, probs, bad)
        assert "\n" not in str(err.value)


def test_explain_image_gives_one_explanation_per_method_and_target(tmp_path):
    clf = _classifier()
    img = Image.fromarray(np.random.default_rng(2).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    path = tmp_path / "scene.png"
    img.save(path)
    out = ex.explain_image(clf, str(path), ["rollout", "chefer"], ["top1", "top2", "0"])
    (res,) = clf.classify(str(path), attention="full")
    top = [p.index for p in res.top_k[:2]]
    targets = list(dict.fromkeys([*top, 0]))
    assert [(e.method, e.target) for e in out] == [(m, t) for m in ("rollout", "chefer") for t in targets]
    rollouts = [e for e in out if e.method == "rollout"]
    assert all(e.grid_map is rollouts[0].grid_map for e in rollouts)  # computed once, shared
    batch = torch.from_numpy(clf.prepare(str(path)).array)[None]
    for e in out:
        assert not e.grid_map.flags.writeable and e.label == clf.labels[e.target]
        want = ex.explain(clf, batch, e.method, e.target, attention=res.attention)
        assert np.allclose(e.grid_map, want, atol=1e-6)
        r, c = np.unravel_index(np.argmax(want), want.shape)
        assert e.peak == pytest.approx(res.geometry.patch_center(r, c))
        d = e.to_dict("maps/scene.npy")
        assert d["target"] == {"label": e.label, "index": e.target} and d["map_file"] == "maps/scene.npy"
    # A given classification result is used as it is (its probabilities pick the targets).
    again = ex.explain_image(clf, str(path), ["attention"], ["top1"], result=res)
    assert again[0].target == res.top1.index
    assert np.array_equal(
        again[0].grid_map, ex.explain(clf, batch, "attention", None, attention=res.attention)
    )


def test_explain_runs_the_float32_module_in_fast_mode():
    clf = _classifier()
    x = _x(12)
    want = ex.explain(clf, x, "gradcam", 3)
    clf._fast_module = copy.deepcopy(clf.module).to(torch.bfloat16)  # what set_fast(True) keeps
    assert np.array_equal(ex.explain(clf, x, "gradcam", 3), want)


def test_map_keys_keep_only_what_a_method_depends_on():
    assert ex.map_key("rollout", 3) == ex.map_key("rollout", 5)
    assert ex.map_key("chefer", 3) != ex.map_key("chefer", 5)
    assert ex.map_key("chefer", 3, layer=2, fusion="max") == ex.map_key("chefer", 3)
    assert ex.map_key("attn-grad", 3, head=1) != ex.map_key("attn-grad", 3)
    with pytest.raises(ValueError, match="unknown explanation method"):
        ex.map_key("saliency", 0)
