"""Models people bring, opened in the window: a checkpoint file or a model folder dropped on
it, then an image classified with it; the attention panel fits the model's tokens (a
distillation token to choose as the query, registers reported per head, no CLS token said)."""

from __future__ import annotations

import numpy as np
import timm
import torch
import transformers
import vit_pytorch as vp

from tests.helpers import drop_paths, shape_file, small_torchvision_vit, wait_result


def _scaled(model: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1 if p.ndim > 1 else 0.05)
    return model.eval()


def _open(qtbot, window, path) -> None:
    drop_paths(window, [str(path)])
    qtbot.waitUntil(lambda: window.model_ready and window.models.model_id == str(path), timeout=60_000)


def _classify(qtbot, window, tmp_path):
    img, _ = shape_file(tmp_path, 3, size=(320, 240))
    drop_paths(window, [str(img)])
    item = wait_result(qtbot, window, str(img))
    assert item.result is not None, item.error
    qtbot.waitUntil(lambda: window.overlay.current_map() is not None, timeout=30_000)
    return item


def test_a_dropped_checkpoint_is_opened_as_the_model(qtbot, window, tmp_path):
    path = tmp_path / "mine.pth"
    torch.save(small_torchvision_vit().state_dict(), path)
    (tmp_path / "mine.labels.txt").write_text("\n".join(f"kind {i}" for i in range(7)))
    _open(qtbot, window, path)
    item = _classify(qtbot, window, tmp_path)
    assert item.result.model_id == str(path)
    assert item.result.top1.label.startswith("kind ")


def test_distilled_deit_offers_its_distillation_token_as_the_query(qtbot, window, tmp_path):
    m = _scaled(timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, num_classes=5,
                                  depth=2, img_size=64))  # fmt: skip
    path = tmp_path / "deit.pth"
    torch.save({"model": m.state_dict()}, path)
    _open(qtbot, window, path)
    _classify(qtbot, window, tmp_path)
    panel = window.attention
    texts = [panel.query.itemText(i) for i in range(panel.query.count())]
    assert texts == ["CLS token", "distillation token"] and panel.query.isEnabled()
    cls_map = window.overlay.current_map().copy()
    panel.query.setCurrentIndex(1)
    dist_map = window.overlay.current_map()
    assert cls_map.shape == dist_map.shape == (4, 4)
    assert not np.allclose(cls_map, dist_map)


def test_registers_are_never_patches_and_their_share_is_shown(qtbot, window, tmp_path):
    m = _scaled(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, depth=2, img_size=64,
                                  reg_tokens=4, no_embed_class=True))  # fmt: skip
    path = tmp_path / "regs.pth"
    torch.save(m.state_dict(), path)
    _open(qtbot, window, path)
    item = _classify(qtbot, window, tmp_path)
    assert item.result.attention.layout.prefix == (
        "CLS",
        "register 1",
        "register 2",
        "register 3",
        "register 4",
    )
    assert window.overlay.current_map().shape == (4, 4)
    note = window.attention.prefix_note.text()
    assert "4 register tokens" in note and "h3" in note


def test_a_dropped_hugging_face_folder_brings_its_labels(qtbot, window, tmp_path):
    cfg = transformers.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                                 image_size=64, patch_size=16, num_labels=3,
                                 id2label={0: "apple", 1: "pear", 2: "plum"}, label2id={"apple": 0, "pear": 1, "plum": 2})  # fmt: skip
    folder = tmp_path / "hf-model"
    _scaled(transformers.ViTForImageClassification(cfg)).save_pretrained(folder)
    _open(qtbot, window, folder)
    item = _classify(qtbot, window, tmp_path)
    assert item.result.top1.label in {"apple", "pear", "plum"}


def test_a_model_without_cls_token_says_what_its_maps_show(qtbot, window, tmp_path):
    m = _scaled(
        vp.SimpleViT(image_size=64, patch_size=16, num_classes=4, dim=64, depth=2, heads=2, mlp_dim=96)
    )
    path = tmp_path / "simple.pth"
    torch.save(m.state_dict(), path)
    (tmp_path / "simple.config.json").write_text('{"image_size": 64, "num_heads": 2}')
    _open(qtbot, window, path)
    item = _classify(qtbot, window, tmp_path)
    assert item.result.attention.layout.query == "mean"
    assert window.attention.query_note.isVisibleTo(window.attention)
    assert "no CLS token" in window.attention.query_note.text()
    assert window.overlay.current_map().shape == (4, 4)


def test_input_size_menu_runs_the_model_at_another_size_and_back(qtbot, window, tmp_path):
    path = tmp_path / "sized.pth"
    torch.save(small_torchvision_vit().state_dict(), path)
    _open(qtbot, window, path)
    menu = window.models.input_size
    qtbot.waitUntil(lambda: menu.shape is not None and menu.shape[1] == (64, 64), timeout=30_000)
    texts = [a.text() for a in menu.menu.actions() if a.text()]
    assert "64 px (trained size)" in texts and "128 px" in texts and "Other Size…" in texts
    first = _classify(qtbot, window, tmp_path)
    assert first.result.geometry.patch_grid == (4, 4)
    gen = window.session.model_generation
    menu.choose((128, 128))
    qtbot.waitUntil(lambda: window.session.model_generation > gen and window.model_ready, timeout=60_000)
    qtbot.waitUntil(lambda: menu.shape is not None and menu.shape[2] == (128, 128), timeout=30_000)
    checked = [a.text() for a in menu.menu.actions() if a.isChecked()]
    assert checked == ["128 px"]
    img, _ = shape_file(tmp_path, 5, size=(300, 200), seed=4)
    drop_paths(window, [str(img)])
    item = wait_result(qtbot, window, str(img))
    assert item.result.geometry.patch_grid == (8, 8)
    menu.choose((64, 64))
    qtbot.waitUntil(lambda: menu.shape is not None and menu.shape[2] == (64, 64), timeout=60_000)
