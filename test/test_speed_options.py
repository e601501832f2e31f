"""Speed options of the model and the Predictor (issue 6): head selection, compile, precision, host staging.

Tiny model on random weights, small grids, a few frames; every option is checked against the plain path.
"""

import copy
import os
import shutil

import numpy as np
import pytest
import torch

from tiny_data import shifting_frames, tiny_model
from vggt4d_ros.inference import Predictor
from vggt4d_ros.inference.predictor import pack_frames, unpack_like

TW = 70  # model width: 5 patches
V, T = 2, 2


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def frames():
    return shifting_frames(V * T, hw=(48, 80), shift=2, seed=3)


QUERIES = [[10.0, 12.0], [60.5, 30.25]]


# ---------------------------------------------------------------------------------------------- model heads
def test_forward_heads_selects_outputs_and_keeps_values(model):
    torch.manual_seed(1)
    x = torch.rand(1, V * T, 3, 28, TW)
    q = torch.tensor([[[5.0, 6.0], [40.0, 20.0]]])
    with torch.no_grad():
        full = model(x, q, num_views=V)
        part = model(x, q, num_views=V, heads=("camera", "depth"))
        trk = model(x, q, num_views=V, heads={"track"})
    assert {"world_points", "world_points_conf", "dynamic_mask_logits", "track"} <= set(full)
    assert "world_points" not in part and "dynamic_mask_logits" not in part and "track" not in part
    for k in ("pose_enc", "depth", "depth_conf", "page_mask"):
        torch.testing.assert_close(part[k], full[k], rtol=0, atol=0)
    assert "pose_enc" not in trk and "depth" not in trk
    torch.testing.assert_close(trk["track"], full["track"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown heads"):
        model(x, num_views=V, heads=("camera", "points"))
    with pytest.raises(ValueError):
        model(x, num_views=V, heads="depth")


def test_required_layers_per_head_selection(model):
    last = model.aggregator.depth - 1
    assert model.required_layers(("camera",)) == [last]
    dpt = sorted(model.depth_head.intermediate_layer_idx)
    assert model.required_layers(("depth",)) == dpt
    assert model.required_layers() == sorted(set(dpt) | {last} | set(model.track_head.intermediate_layer_idx))
    assert model.required_layers(()) == []
    assert model.enabled_heads() == {"camera", "depth", "point", "mask", "track"}


# ---------------------------------------------------------------------------------------------- predictor heads
def test_point_head_skip_changes_nothing_but_the_work(model, frames):
    # dynamic_mask="head": the tiny config's own choice is PAGE-4D's mask (no mask head run)
    skip = Predictor(copy.deepcopy(model), target_width=TW, dynamic_mask="head")
    full = Predictor(copy.deepcopy(model), target_width=TW, dynamic_mask="head", skip_unused_heads=False)
    assert skip.heads_for() == {"camera", "depth", "mask", "track"} and full.heads_for() is None
    assert skip.heads_for(with_tracks=False) == {"camera", "depth", "mask"}
    a = skip.predict(frames, num_views=V, query_points=QUERIES)
    b = full.predict(frames, num_views=V, query_points=QUERIES)
    assert "world_points" not in a.raw and "world_points" in b.raw  # the point head did not run
    for k in ("pose_enc", "depth", "depth_conf", "dynamic_mask", "track"):
        torch.testing.assert_close(a.raw[k], b.raw[k], rtol=0, atol=0)
    for fa, fb in zip(a.frames, b.frames):
        np.testing.assert_array_equal(fa.cam_from_world, fb.cam_from_world)
        np.testing.assert_array_equal(fa.depth, fb.depth)
        np.testing.assert_array_equal(fa.points_world, fb.points_world)
        np.testing.assert_array_equal(fa.points_conf, fb.points_conf)
        np.testing.assert_array_equal(fa.points_conf, fa.depth_conf)  # depth points carry the depth confidence
        np.testing.assert_array_equal(fa.dynamic_mask, fb.dynamic_mask)
        np.testing.assert_array_equal(fa.tracks, fb.tracks)


def test_head_points_keep_the_point_head_and_its_confidence(model, frames):
    skip = Predictor(copy.deepcopy(model), target_width=TW, compute_points="head", dynamic_mask="geometric")
    full = Predictor(copy.deepcopy(model), target_width=TW, compute_points="head", dynamic_mask="geometric",
                     skip_unused_heads=False)
    assert skip.heads_for(with_tracks=False) == {"camera", "depth", "point"}  # no mask head: geometric mask
    a = skip.predict(frames, num_views=V)
    b = full.predict(frames, num_views=V)
    assert "dynamic_mask_logits" not in a.raw and "dynamic_mask_logits" in b.raw
    assert "track" not in a.raw  # no queries: no track head
    for fa, fb in zip(a.frames, b.frames):
        np.testing.assert_array_equal(fa.points_world, fb.points_world)
        np.testing.assert_array_equal(fa.points_conf, fb.points_conf)
        np.testing.assert_array_equal(fa.dynamic_mask, fb.dynamic_mask)
        assert not np.array_equal(fa.points_conf, fa.depth_conf)  # the point head's own confidence


def test_points_from_depth_match_float64_unprojection(model, frames):
    out = Predictor(copy.deepcopy(model), target_width=TW).predict(frames, num_views=V)
    for f in out.frames:
        H, W = f.depth.shape
        v, u = np.mgrid[0:H, 0:W].astype(np.float64)
        K = f.intrinsics
        z = f.depth.astype(np.float64)
        pc = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], -1)
        R, t = f.cam_from_world[:3, :3], f.cam_from_world[:3, 3]
        pw = (pc - t) @ R  # R^T (p - t)
        scale = max(np.abs(pw).max(), np.abs(t).max())
        np.testing.assert_allclose(f.points_world, pw, rtol=0, atol=8 * np.finfo(np.float32).eps * scale)


# ---------------------------------------------------------------------------------------------- streaming cache
def test_streaming_cache_with_skipped_heads_equals_fresh_windows(model, frames):
    p = Predictor(copy.deepcopy(model), target_width=TW)
    keys = [("c", i) for i in range(V * T)]
    p.predict(frames, num_views=V, frame_keys=keys)
    nxt = frames[V:] + frames[:V][::-1]
    keys2 = keys[V:] + [("c", 10 + i) for i in range(V)]
    b = p.predict(nxt, num_views=V, frame_keys=keys2, query_points=QUERIES)
    assert p.embed_cache_misses == V
    fresh = Predictor(copy.deepcopy(model), target_width=TW, skip_unused_heads=False)
    c = fresh.predict(nxt, num_views=V, query_points=QUERIES)
    for k in ("pose_enc", "depth", "depth_conf", "dynamic_mask", "track"):
        torch.testing.assert_close(b.raw[k], c.raw[k])


# ---------------------------------------------------------------------------------------------- precision
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_precision_modes_give_finite_outputs(model, frames, precision):
    p = Predictor(copy.deepcopy(model), target_width=TW, precision=precision)
    assert p.precision in (precision, "fp32")  # fp32 where the device cannot run it (warned)
    out = p.predict(frames, num_views=V, query_points=QUERIES, frame_keys=[("p", i) for i in range(V * T)])
    for f in out.frames:
        for a in (f.cam_from_world, f.intrinsics, f.depth, f.depth_conf, f.points_world, f.dynamic_mask, f.tracks):
            assert np.isfinite(a).all()
        assert (f.depth > 0).all()


# ---------------------------------------------------------------------------------------------- host staging
def test_pack_and_unpack_frames_round_trip():
    rng = np.random.default_rng(0)
    fr = [rng.integers(0, 256, (5, 7, 3), dtype=np.uint8), rng.integers(0, 256, (4, 9, 3), dtype=np.uint8),
          rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)[:, ::2]]  # a non-contiguous view
    buf = torch.zeros(sum(f.size for f in fr) + 11, dtype=torch.uint8)
    layout = pack_frames(fr, buf)
    assert [o for o, _ in layout] == [0, 105, 213]
    views = unpack_like(buf.clone(), layout)
    for f, t in zip(fr, views):
        np.testing.assert_array_equal(t.numpy(), f)
    assert int(buf[-11:].sum()) == 0  # nothing written past the frames


def test_cpu_predictor_does_not_stage(model, frames):
    p = Predictor(copy.deepcopy(model), target_width=TW)
    assert p._upload(frames) is frames and p._staging is None


# ---------------------------------------------------------------------------------------------- torch.compile
def _raising_backend(gm, example_inputs):
    raise RuntimeError("no compiler here")


def test_compile_failure_falls_back_to_eager(model, frames, caplog):
    eager = Predictor(copy.deepcopy(model), target_width=TW).predict(frames, num_views=V)
    p = Predictor(copy.deepcopy(model), target_width=TW, compile=True, compile_options={"backend": _raising_backend})
    assert p.compiled
    first = p.predict(frames, num_views=V)  # first window on a grid: eager warm-up
    with caplog.at_level("WARNING"):
        second = p.predict(frames, num_views=V)  # compiled: the backend raises -> warning, eager
    assert not p.compiled and "no compiler here" in p.compile_error
    assert any("eager" in r.getMessage() for r in caplog.records)
    for out in (first, second):
        torch.testing.assert_close(out.raw["depth"], eager.raw["depth"], rtol=0, atol=0)
        torch.testing.assert_close(out.raw["pose_enc"], eager.raw["pose_enc"], rtol=0, atol=0)


def test_compile_dynamo_graph_matches_eager(model, frames):
    """Dynamo capture (``eager`` backend: no code generation, seconds) reproduces the eager forward."""
    ref = Predictor(copy.deepcopy(model), target_width=TW, dynamic_mask="head")
    p = Predictor(copy.deepcopy(model), target_width=TW, dynamic_mask="head", compile=True,
                  compile_options={"backend": "eager"})
    keys = [("k", i) for i in range(V * T)]
    for _ in range(2):
        a = p.predict(frames, num_views=V, query_points=QUERIES, frame_keys=keys)
        b = ref.predict(frames, num_views=V, query_points=QUERIES, frame_keys=keys)
        assert p.compiled, p.compile_error
        for k in ("pose_enc", "depth", "depth_conf", "dynamic_mask_logits", "track"):
            torch.testing.assert_close(a.raw[k], b.raw[k], rtol=1e-5, atol=1e-6)


def _inductor_available() -> bool:
    try:
        import torch._inductor  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


@pytest.mark.skipif(not os.environ.get("VGGT4D_SLOW_TESTS"),
                    reason="inductor compiles the tiny model in about 60 s on the shared CPU; VGGT4D_SLOW_TESTS=1")
@pytest.mark.skipif(not _inductor_available(), reason="torch inductor or a C++ compiler is not available")
def test_compile_inductor_matches_eager(model):
    rng = np.random.default_rng(5)
    two = [rng.integers(0, 256, (30, 60, 3), dtype=np.uint8) for _ in range(2)]
    ref = Predictor(copy.deepcopy(model), target_width=56).predict(two)
    p = Predictor(copy.deepcopy(model), target_width=56, compile=True)
    for _ in range(2):  # eager warm-up, then the compiled graph
        out = p.predict(two)
    assert p.compiled, p.compile_error
    torch.testing.assert_close(out.raw["depth"], ref.raw["depth"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.raw["pose_enc"], ref.raw["pose_enc"], rtol=1e-4, atol=1e-5)
    # the model itself is unchanged: eager calls after compiled ones give the eager result
    again = Predictor(p.model, target_width=56).predict(two)
    torch.testing.assert_close(again.raw["depth"], ref.raw["depth"], rtol=0, atol=0)


def test_compile_mode_follows_grid_changes(model):
    """Grid B, then a smaller A, then B compiled: the RoPE tables follow (A's would be too short for B)."""
    rng = np.random.default_rng(7)
    fr = [rng.integers(0, 256, (60, 110, 3), dtype=np.uint8) for _ in range(2)]
    ref = {w: Predictor(copy.deepcopy(model), target_width=w).predict(fr).raw["depth"] for w in (56, 112)}
    p = Predictor(copy.deepcopy(model), target_width=112, compile=True, compile_options={"backend": "eager"})
    for w in (112, 56, 112):  # eager warm-up on each grid, then the compiled graph on B
        p.target_width = w
        out = p.predict(fr)
        assert p.compiled, p.compile_error
        assert out.model_hw[1] == w
        torch.testing.assert_close(out.raw["depth"], ref[w], rtol=1e-5, atol=1e-6)
