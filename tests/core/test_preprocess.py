from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from vit_desktop.core import catalog
from vit_desktop.core.demo.model import PREPROCESSING as DEMO_PRE
from vit_desktop.core.preprocess import Preprocessing, prepare


def _noise(w, h, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), np.uint8), "RGB")


@pytest.mark.parametrize(
    "model_id", [e.id for e in catalog.entries() if e.architecture.startswith("torchvision")]
)
@pytest.mark.parametrize("size", [(640, 480), (300, 900), (1000, 250)])
def test_same_pixels_as_torchvision_transforms(model_id, size):
    from torchvision import models

    entry = catalog.get(model_id)
    builder = entry.architecture.split(":")[1]
    tv = getattr(models.get_model_weights(builder), entry.weights_name).transforms()
    img = _noise(*size)
    ours, geom = prepare(img, entry.preprocessing)
    ref = tv(img).numpy()
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-5
    assert geom.patch_grid == entry.patch_grid


def test_crop_box_and_patches_map_to_original_pixels():
    pre = Preprocessing(input_size=(224, 224), patch_size=16, mean=(0.5,) * 3, std=(0.5,) * 3,
                        mode="resize_crop", resize_size=256)  # fmt: skip
    _, g = prepare(_noise(4000, 1000), pre)
    # Shorter side 1000 → 256: scale 0.256; the 224 crop is centred.
    assert g.scale[0] == pytest.approx(1024 / 4000) and g.scale[1] == pytest.approx(0.256)
    left, top, right, bottom = g.crop_box
    assert (right - left) == pytest.approx(224 / g.scale[0])
    assert (left + right) / 2 == pytest.approx(2000, abs=3)
    assert (top + bottom) / 2 == pytest.approx(500, abs=3)
    assert g.patch_grid == (14, 14)
    x0, y0, x1, y1 = g.patch_box(0, 0)
    assert (x0, y0) == pytest.approx((left, top))
    assert (x1 - x0) == pytest.approx(16 / g.scale[0])
    assert g.patch_at(*g.patch_center(13, 7)) == (13, 7)
    assert g.patch_at(5, 5) is None  # cropped away


def test_letterbox_keeps_everything_and_pads_with_zero():
    arr, g = prepare(Image.new("RGB", (400, 200), (255, 0, 0)), DEMO_PRE)
    h, w = DEMO_PRE.input_size
    assert arr.shape == (3, h, w)
    left, top, right, bottom = g.crop_box
    assert left == pytest.approx(0) and right == pytest.approx(400)
    assert top < 0 and bottom > 200  # the model's square extends past the image
    assert g.visible_box == pytest.approx((0, 0, 400, 200))
    assert np.all(arr[:, 0, :] == 0) and np.all(arr[:, -1, :] == 0)  # padding = the mean
    assert arr[0, h // 2, w // 2] > 1.0  # red survived


@settings(max_examples=60, deadline=None)
@given(w=st.integers(1, 3000), h=st.integers(1, 3000), mode=st.sampled_from(["resize_crop", "letterbox"]),
       x=st.floats(0, 1), y=st.floats(0, 1))  # fmt: skip
def test_geometry_round_trips(w, h, mode, x, y):
    pre = Preprocessing(input_size=(96, 96), patch_size=12, mean=(0.5,) * 3, std=(0.25,) * 3,
                        mode=mode, resize_size=110 if mode == "resize_crop" else None)  # fmt: skip
    rw, rh = pre.resized_size((w, h))
    from vit_desktop.core.preprocess import Geometry

    ox = -((96 - rw) // 2) if mode == "letterbox" else int(round((rw - 96) / 2.0))
    oy = -((96 - rh) // 2) if mode == "letterbox" else int(round((rh - 96) / 2.0))
    g = Geometry((w, h), (96, 96), (rw / w, rh / h), (ox, oy), 12, (8, 8))
    px, py = x * w, y * h
    ix, iy = g.original_to_input(px, py)
    assert g.input_to_original(ix, iy) == pytest.approx((px, py), rel=1e-6, abs=1e-6)
    cell = g.patch_at(px, py)
    if cell is not None:
        x0, y0, x1, y1 = g.patch_box(*cell)
        assert x0 - 1e-6 <= px <= x1 + 1e-6 and y0 - 1e-6 <= py <= y1 + 1e-6


def test_reduced_decode_keeps_original_geometry():
    big = _noise(2000, 1500)
    small = big.resize((500, 375), Image.Resampling.BILINEAR)
    pre = catalog.get("vit-b-16").preprocessing
    a, g1 = prepare(big, pre)
    b, g2 = prepare(small, pre, original_size=(2000, 1500))
    assert g1.crop_box == pytest.approx(g2.crop_box)
    assert g2.original_size == (2000, 1500)
    assert a.shape == b.shape


def test_to_tensor_is_float32_chw():
    arr, _ = prepare(_noise(50, 70), DEMO_PRE)
    t = torch.from_numpy(arr)
    assert t.dtype == torch.float32 and t.is_contiguous()


def test_overlay_bands_match_and_peak_lands_on_its_patch():
    from vit_desktop.core.overlay import blend, map_to_image

    pre = catalog.get("vit-b-16").preprocessing
    _, g = prepare(_noise(1800, 1200), pre)
    grid = np.zeros(g.patch_grid, np.float32)
    grid[3, 9] = 1.0
    full = map_to_image(grid, g)
    bands = np.concatenate(
        [map_to_image(grid, g, rows=slice(t, min(1200, t + 100))) for t in range(0, 1200, 100)]
    )
    np.testing.assert_array_equal(np.isnan(full), np.isnan(bands))
    np.testing.assert_allclose(np.nan_to_num(full), np.nan_to_num(bands))
    y, x = np.unravel_index(np.nanargmax(full), full.shape)
    x0, y0, x1, y1 = g.patch_box(3, 9)
    assert x0 <= x <= x1 and y0 <= y <= y1
    img = blend(Image.new("RGB", (1800, 1200), (0, 0, 0)), grid, g, cmap="gray", opacity=1.0, band=128)
    arr = np.asarray(img)
    assert arr[int(y), int(x)].max() == 255
    assert arr[5, 5].max() == 0  # cropped away and dimmed


# -- no path can build an absurd Preprocessing ----------------------------------------------------

_GOOD = dict(input_size=(64, 64), patch_size=16, mean=(0.5,) * 3, std=(0.25,) * 3)


@pytest.mark.parametrize("change,match", [
    (dict(input_size=(128,)), "two whole numbers"),
    (dict(input_size=(64.0, 64)), "two whole numbers"),
    (dict(input_size=(True, 64)), "two whole numbers"),
    (dict(input_size=(0, 0), patch_size=1), "outside 1…4096"),
    (dict(input_size=(8192, 8192)), "outside 1…4096"),
    (dict(patch_size=0), "patch size must be a whole number of at least 1"),
    (dict(patch_size=-16), "at least 1"),
    (dict(patch_size=12), "not a whole number of 12-px patches"),
    (dict(mean="abc"), "mean must be three finite numbers"),
    (dict(mean=(0.5, 0.5)), "mean must be three"),
    (dict(mean=(0.5, float("nan"), 0.5)), "mean must be three finite"),
    (dict(std=(0.2, 0.0, 0.2)), "std values must be positive"),
    (dict(std=(0.2, -1.0, 0.2)), "std values must be positive"),
    (dict(std=(0.2, float("inf"), 0.2)), "std must be three finite"),
    (dict(mode="stretch"), "unknown preprocessing mode"),
    (dict(mode=["letterbox"]), "unknown preprocessing mode"),
    (dict(interpolation="cubic"), "unknown interpolation"),
    (dict(interpolation={"a": 1}), "unknown interpolation"),
    (dict(resize_size=60000), "resize size 60000 is outside 64…8192"),
    (dict(resize_size=32), "resize size 32 is outside"),
    (dict(resize_size=256.0), "resize size"),
    (dict(resize_size=False), "resize size"),
])  # fmt: skip
def test_absurd_preprocessing_is_refused_where_it_is_built(change, match):
    with pytest.raises(ValueError, match=match):
        Preprocessing(**{**_GOOD, **change})


def test_preprocessing_values_are_normalised():
    pre = Preprocessing(input_size=[64, 32], patch_size=np.int64(16), mean=[0, 0.5, 1], std=[1, 1, 1],
                        resize_size=np.int32(100))  # fmt: skip
    assert pre.input_size == (64, 32) and isinstance(pre.input_size, tuple)
    assert pre.mean == (0.0, 0.5, 1.0) and all(type(v) is float for v in pre.mean + pre.std)
    assert type(pre.patch_size) is int and type(pre.resize_size) is int
    assert hash(pre) == hash(Preprocessing(input_size=(64, 32), patch_size=16, mean=(0.0, 0.5, 1.0),
                                           std=(1.0,) * 3, resize_size=100))  # fmt: skip


def test_every_catalog_preprocessing_is_within_the_bounds():
    # The bounds leave room for every published model (ViT-H/14 SWAG: 518 px, resize 518).
    sizes = [e.preprocessing.input_size for e in catalog.entries()]
    assert (518, 518) in sizes
    big = Preprocessing(input_size=(4096, 4096), patch_size=16, mean=(0.5,) * 3, std=(0.5,) * 3,
                        resize_size=8192)  # fmt: skip
    assert big.patch_grid == (256, 256)


def test_an_extreme_strip_is_resized_only_where_the_crop_keeps_it():
    """A 2×3000 strip would resize to 256×384,000 px before a 224 crop: the crop's part alone
    is resized, with the same pixels and geometry as resizing everything (checked here) —
    and a 1×60,000 one (gigabytes the other way) prepares at once."""
    from PIL import Image

    from vit_desktop.core.preprocess import HUGE_RESIZE, Preprocessing, prepare

    pre = Preprocessing(input_size=(224, 224), patch_size=16, mean=(0.5,) * 3, std=(0.25,) * 3,
                        mode="resize_crop", resize_size=256, interpolation="bilinear")  # fmt: skip
    rng = np.random.default_rng(0)
    strip = Image.fromarray(rng.integers(0, 256, (3000, 2, 3), dtype=np.uint8))
    rw, rh = pre.resized_size(strip.size)
    assert rw * rh > HUGE_RESIZE * 224 * 224
    x, geom = prepare(strip, pre)
    ox, oy = geom.offset
    full = np.asarray(strip.resize((rw, rh), Image.Resampling.BILINEAR))[oy : oy + 224, ox : ox + 224]
    ref = (full.astype(np.float32) / 255 - 0.5) / 0.25
    np.testing.assert_allclose(x.transpose(1, 2, 0), ref, atol=2 / 255 / 0.25)
    bomb = Image.new("RGB", (1, 60_000), (200, 10, 10))
    x, geom = prepare(bomb, pre)
    assert x.shape == (3, 224, 224) and geom.original_size == (1, 60_000)
