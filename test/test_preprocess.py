"""Preprocessing: sizes, the exact pixel mapping (both ways), intrinsics, and mapping outputs back."""

from pathlib import Path

import numpy as np
import pytest
import torch

from vggt4d_ros.geometry import project_points
from vggt4d_ros.inference.preprocess import (
    compute_pixel_map,
    model_to_input,
    model_to_input_channels,
    preprocess_frames,
)


@pytest.mark.parametrize(
    "hw, mode, expect_model, expect_resized",
    [
        ((480, 640), "crop", (392, 518), (392, 518)),  # 4:3 -> VGGT's 518x392
        ((360, 640), "crop", (294, 518), (294, 518)),  # 16:9 -> 518x294
        ((640, 480), "crop", (518, 518), (686, 518)),  # portrait: height centre-cropped to 518
        ((480, 640), "pad", (518, 518), (392, 518)),  # padded to a square
        ((640, 480), "pad", (518, 518), (518, 392)),
    ],
)
def test_sizes_follow_vggt(hw, mode, expect_model, expect_resized):
    pm = compute_pixel_map(hw, 518, mode)
    assert pm.model_hw == expect_model
    assert pm.resized_hw == expect_resized
    assert pm.model_hw[0] % 14 == 0 and pm.model_hw[1] % 14 == 0


def _blob_frame(hw, centre, radius=6.0):
    """uint8 frame with a smooth bright disc (RGB) at ``centre`` = (u, v) on black."""
    H, W = hw
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    r2 = (u - centre[0]) ** 2 + (v - centre[1]) ** 2
    img = np.clip(255 * np.exp(-r2 / (2 * radius**2)), 0, 255).astype(np.uint8)
    return np.repeat(img[..., None], 3, axis=2)


def _centroid(img):
    """Intensity centroid (u, v) of a (H, W) tensor."""
    H, W = img.shape
    w = img.double() / img.sum()
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    return torch.stack([(w * u).sum(), (w * v).sum()])


@pytest.mark.parametrize(
    "hw, mode, centre",
    [
        ((480, 640), "crop", (201.0, 133.0)),
        ((640, 480), "crop", (300.0, 333.0)),  # portrait, crop in y
        ((480, 640), "pad", (455.0, 402.0)),
        ((640, 480), "pad", (96.0, 511.0)),  # portrait, pad in x
        ((100, 150), "crop", (70.0, 40.0)),  # upscaling
    ],
)
def test_drawn_pixel_lands_where_expected(hw, mode, centre):
    frame = _blob_frame(hw, centre)
    images, maps = preprocess_frames([frame], target_width=518, mode=mode, pad_value=0.0)
    pm = maps[0]
    assert images.shape == (1, 3) + pm.model_hw
    c_in = torch.tensor(centre, dtype=torch.float64)
    expected = pm.input_to_model(c_in)
    got = _centroid(images[0, 0])
    assert torch.allclose(got, expected, atol=0.05), (got, expected)
    # and back
    assert torch.allclose(pm.model_to_input(got), c_in, atol=0.05 / min(pm.scale_xy))


def test_pad_mode_pads_with_value_and_keeps_everything():
    frame = np.full((480, 640, 3), 0, np.uint8)
    images, (pm,) = preprocess_frames([frame], mode="pad", pad_value=1.0)
    x0, y0, x1, y1 = pm.content_box()
    assert (x0, x1) == (0, 517) and (y0, y1) == (63, 63 + 392 - 1)
    assert torch.all(images[0, :, :y0] == 1.0) and torch.all(images[0, :, y1 + 1 :] == 1.0)
    assert torch.all(images[0, :, y0 : y1 + 1] == 0.0)


def test_intrinsics_scale_consistently():
    """Projecting with K_input then mapping the pixel == projecting with K_model, both modes, both ways."""
    K_in = torch.tensor([[520.0, 0.0, 318.7], [0.0, 515.0, 242.1], [0.0, 0.0, 1.0]], dtype=torch.float64)
    X = torch.randn(50, 3, dtype=torch.float64) + torch.tensor([0.0, 0.0, 5.0], dtype=torch.float64)
    I = torch.eye(4, dtype=torch.float64)
    for mode in ("crop", "pad"):
        for hw in ((480, 640), (640, 480)):
            pm = compute_pixel_map(hw, 518, mode)
            K_m = pm.intrinsics_to_model(K_in)
            uv_in, _ = project_points(X, I, K_in)
            uv_m, _ = project_points(X, I, K_m)
            torch.testing.assert_close(pm.input_to_model(uv_in), uv_m)
            torch.testing.assert_close(pm.intrinsics_to_input(K_m), K_in)
            assert abs(float(K_m[0, 0]) - 520.0 * pm.scale_xy[0]) < 1e-9


def test_model_to_input_is_exact_for_linear_maps_and_nan_where_cropped():
    pm = compute_pixel_map((640, 480), 518, "crop")  # portrait: 84 rows cropped top and bottom
    Hm, Wm = pm.model_hw
    v, u = torch.meshgrid(torch.arange(Hm, dtype=torch.float64), torch.arange(Wm, dtype=torch.float64), indexing="ij")
    field = 2.0 * u - 0.5 * v + 3.0
    back = model_to_input(field, pm)
    assert back.shape == (640, 480)
    H, W = pm.input_hw
    vi, ui = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    uvm = pm.input_to_model(torch.stack([ui, vi], -1))
    expected = 2.0 * uvm[..., 0] - 0.5 * uvm[..., 1] + 3.0
    inside = (uvm[..., 0] >= 0) & (uvm[..., 0] <= Wm - 1) & (uvm[..., 1] >= 0) & (uvm[..., 1] <= Hm - 1)
    torch.testing.assert_close(back[inside], expected[inside], atol=1e-9, rtol=0)
    outside = (uvm[..., 1] < -0.5) | (uvm[..., 1] > Hm - 0.5)
    assert outside.sum() > 100 and torch.isnan(back[outside]).all()
    assert not torch.isnan(back[~outside]).any()
    # channels-last form
    back3 = model_to_input_channels(torch.stack([field, field * 0 + 1, -field], -1), pm)
    assert back3.shape == (640, 480, 3)
    torch.testing.assert_close(back3[..., 2][inside], -expected[inside], atol=1e-9, rtol=0)


def test_model_to_input_pad_mode_has_no_holes_and_ignores_padding():
    pm = compute_pixel_map((480, 640), 518, "pad")
    x0, y0, x1, y1 = pm.content_box()
    m = torch.full(pm.model_hw, 1e6)  # huge in the padding
    m[y0 : y1 + 1, x0 : x1 + 1] = 2.0
    back = model_to_input(m, pm)
    assert back.shape == (480, 640)
    torch.testing.assert_close(back, torch.full_like(back, 2.0), atol=1e-5, rtol=0)


def test_mixed_frame_sizes_share_one_grid():
    frames = [np.zeros((480, 640, 3), np.uint8), np.zeros((720, 1280, 3), np.uint8)]
    images, maps = preprocess_frames(frames, target_width=252, mode="crop")
    assert images.shape == (2, 3, 196, 252)
    assert maps[1].model_hw == (196, 252) and maps[1].resized_hw == (140, 252)  # padded to fit


# ---------------------------------------------------------------------------------------------------------------
# resize="pil": 4D-VGGT v1.0's four_d_vggt/utils/load_fn.py, via the fixture made from the release's own code by
# scripts/make_4dvggt_fixture.py (load_and_preprocess_images at target_size 56 on 4:3, 16:9, portrait, an
# upscaled and an RGBA image, crop and pad).
LOAD_FN = Path(__file__).parent / "data" / "model" / "4dvggt_load_fn.safetensors"


def _load_fn_fixture():
    from safetensors import safe_open

    with safe_open(str(LOAD_FN), "pt") as f:
        return int(f.metadata()["target_size"]), {k: f.get_tensor(k) for k in f.keys()}


@pytest.mark.parametrize("mode", ["crop", "pad"])
@pytest.mark.parametrize("name", ["4x3", "16x9", "portrait", "up", "rgba"])
def test_pil_resize_is_the_release_load_fn(name, mode):
    target, t = _load_fn_fixture()
    ref = t[f"{mode}.{name}"]
    frame = t[f"input.{name}"].numpy()
    images, maps = preprocess_frames([frame], target, mode, resize="pil")
    assert tuple(images.shape[1:]) == tuple(ref.shape) == (3,) + maps[0].model_hw
    assert torch.equal((images[0] * 255).round().to(torch.uint8), ref)  # every pixel, exactly
    assert torch.equal(images[0] * 255, (images[0] * 255).round())  # k / 255 values, as load_fn's
    if name != "rgba":  # the default resize: same sizes, values within about one level when shrinking
        plain, plain_maps = preprocess_frames([frame], target, mode)
        assert plain_maps == maps
        err = (plain[0] * 255 - ref.float()).abs()
        assert err.max() <= (8.0 if name == "up" else 1.5) and err.max() > 0


def test_pil_resize_checks_its_input():
    with pytest.raises(ValueError, match="uint8"):
        preprocess_frames([np.zeros((28, 28, 3), np.float32)], 28, "crop", resize="pil")
    with pytest.raises(ValueError, match="resize"):
        preprocess_frames([np.zeros((28, 28, 3), np.uint8)], 28, "crop", resize="bogus")
