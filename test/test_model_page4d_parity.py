"""PAGE-4D's two released checkpoints, loaded strictly and run as PAGE-4D runs them, against PAGE-4D's own code.

``test/data/model/page4d_small/`` was produced by ``scripts/make_page4d_fixture.py`` from PAGE-4D's code
(github kaichen-z/PAGE4D, commit 9f4ef74) on a small configuration with random weights, fp32: each checkpoint in
PAGE-4D's trainer format, ``checkpoint_nomask.pt`` run with the mask path off (its evaluation scripts'
``--num_mask 0``), ``checkpoint_mask.pt`` with it on (``--num_mask > 0``: bias strength 64). The models here are
``config/models/page4d.yaml`` / ``page4d-mask.yaml`` with only the dimensions scaled down, so the files' own
settings (no track head, the bias strength, its form) are what is tested.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from vggt4d_ros.model import CheckpointError, build_model, load_checkpoint, load_model_config

DATA = Path(__file__).parent / "data" / "model" / "page4d_small"
#: the fixture's dimensions; everything else comes from the YAML files
DIMS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "patch_embed", "dpt_layers", "camera_head",
        "dpt", "keep_layers")
CONFIGS = {"nomask": "page4d", "mask": "page4d-mask"}


@pytest.fixture(scope="module")
def io():
    with safe_open(str(DATA / "io.safetensors"), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return {v: json.loads(meta[f"build_model.{v}"]) for v in CONFIGS}, tensors


def small_config(config: str, fixture_build: dict, **page) -> dict:
    """The named project config with the fixture's dimensions (and its block indices scaled to depth 5); also
    the model configuration of the end-to-end runs (test_release_models_e2e.py)."""
    cfg = load_model_config(config)
    cfg.update({k: fixture_build[k] for k in DIMS})
    cfg["page4d"] = dict(cfg["page4d"], mask_block=fixture_build["page4d"]["mask_block"],
                         bias_blocks=fixture_build["page4d"]["bias_blocks"], **page)
    return cfg


def _model(config: str, fixture_build: dict, **page):
    return build_model(**small_config(config, fixture_build, **page)).eval()


def _compare(out, t, variant):
    """Max relative error (|a-b| / max|b|) per output; asserts each within 1e-3."""
    errs = {}
    for key, ref in t.items():
        if not key.startswith(variant + ".") or key.endswith("page_static"):
            continue
        name = key[len(variant) + 1:]
        got = out["pose_enc_list"][int(name.rsplit(".", 1)[1])] if name.startswith("pose_enc_list.") else out[name]
        assert got.shape == ref.shape, name
        errs[name] = float((got - ref).abs().max() / ref.abs().max().clamp(min=1e-12))
    assert len(errs) == 9, sorted(errs)  # pose_enc, its 4 refinements, depth (+conf), world points (+conf)
    return errs


@pytest.mark.parametrize("variant", ["nomask", "mask"])
def test_released_checkpoint_matches_page4d(io, variant):
    builds, t = io
    model = _model(CONFIGS[variant], builds[variant])
    assert model.track_head is None  # PAGE-4D has none
    report = load_checkpoint(model, DATA / f"checkpoint_{variant}.pt")  # strict
    assert report.ok and report.layout == "page4d" and report.variant == f"page4d-{variant}"
    assert report.metadata["steps"]["train"] > 0 and report.notes == []
    expected = 0.0 if variant == "nomask" else 64.0
    assert model.aggregator.page4d_cfg["strength"] == expected
    with torch.no_grad():
        out = model(t["input.images"])
    errs = _compare(out, t, variant)
    print(variant, {k: f"{v:.2e}" for k, v in errs.items()})
    assert max(errs.values()) < 1e-3, errs
    # the mask predictor itself: PAGE-4D's static score, reported as page_mask = 1 - score
    torch.testing.assert_close(1.0 - out["page_mask"], t[f"{variant}.page_static"], rtol=1e-4, atol=1e-5)


def test_bias_matters_at_this_configuration(io, tmp_path):
    """The fixture can tell the two inference modes apart: running either checkpoint with the other's bias
    setting (through a copy whose name does not say its variant, which the loader lets through with a note)
    moves the pose far outside the tolerance (PAGE-4D's full model: about 30 % in pose_enc)."""
    builds, t = io
    for variant, wrong in (("nomask", 64.0), ("mask", 0.0)):
        path = tmp_path / f"renamed_{len(variant)}.pt"
        shutil.copy(DATA / f"checkpoint_{variant}.pt", path)
        model = _model(CONFIGS[variant], builds[variant], strength=wrong)
        assert load_checkpoint(model, path).notes
        with torch.no_grad():
            out = model(t["input.images"])
        ref = t[f"{variant}.pose_enc"]
        rel = float((out["pose_enc"] - ref).abs().max() / ref.abs().max())
        print("wrong pairing", variant, f"pose_enc rel {rel:.3f}")
        assert rel > 0.05, (variant, rel)
        # the mask predictor runs before the biased blocks: unchanged
        torch.testing.assert_close(1.0 - out["page_mask"], t[f"{variant}.page_static"], rtol=1e-4, atol=1e-5)


def test_wrong_pairing_is_refused(io):
    builds, _ = io
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(_model("page4d", builds["nomask"]), DATA / "checkpoint_mask.pt")
    msg = str(e.value)
    assert "checkpoint_mask.pt" in msg and "page4d.strength 0" in msg and "page4d-mask" in msg, msg
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(_model("page4d-mask", builds["mask"]), DATA / "checkpoint_nomask.pt")
    msg = str(e.value)
    assert "checkpoint_nomask.pt" in msg and "page4d.strength 64" in msg and "model.config page4d " in msg, msg


def test_renamed_trainer_file_loads_with_a_logged_choice(io, caplog, tmp_path):
    builds, t = io
    path = tmp_path / "weights_from_a_friend.pt"
    shutil.copy(DATA / "checkpoint_nomask.pt", path)
    model = _model("page4d", builds["nomask"])
    with caplog.at_level(logging.WARNING, logger="vggt4d_ros.model.checkpoint"):
        report = load_checkpoint(model, path)
    assert report.ok and report.variant is None and len(report.notes) == 1
    note = report.notes[0]
    assert "weights_from_a_friend.pt" in note and "page4d.strength 0" in note and "checkpoint_nomask.pt" in note
    assert note in caplog.text
    with torch.no_grad():
        out = model(t["input.images"])
    assert max(_compare(out, t, "nomask").values()) < 1e-3


def test_track_head_config_is_refused_with_a_hint(io):
    """The old page4d.yaml built a track head: PAGE-4D's files have none, and the error says so."""
    builds, _ = io
    cfg = load_model_config("page4d")
    cfg.update({k: builds["nomask"][k] for k in DIMS})
    cfg["page4d"] = dict(cfg["page4d"], mask_block=1, bias_blocks=[2, 3])
    cfg.update(enable_track=True, track=dict(features=8, hidden_size=16, corr_levels=2, corr_radius=1,
                                             out_channels=[8, 8, 8, 8], tracker_depth=1, num_heads=2,
                                             num_virtual_tracks=4))
    with pytest.raises(CheckpointError, match="enable_track=false") as e:
        load_checkpoint(build_model(**cfg), DATA / "checkpoint_nomask.pt")
    assert "missing" in str(e.value) and "track_head." in str(e.value)


def test_pipeline_runs_both_checkpoints_keypoints_from_geometry(tmp_path):
    """Both PAGE-4D checkpoints (at the fixture's size) through the pipeline the node and the replay run: no
    track head, so the keypoints are the geometric tracks; the dynamic mask is PAGE-4D's predictor. (Random
    weights: with mask_threshold 1 no query counts as dynamic, so every keypoint has its geometric position.)"""
    from types import SimpleNamespace

    import numpy as np
    import yaml

    from vggt4d_ros.data.synth import SynthConfig, SynthSequence
    from vggt4d_ros.perception.pipeline import Pipeline, PipelineConfig

    seq = SynthSequence(SynthConfig(seed=2, num_cameras=1, width=140, height=84, duration_s=0.5,
                                    num_moving_objects=1, texture_px=128))
    frames = [seq.frame(i) for i in range(seq.num_frames)]

    def window(start, T=3):
        fr = [{"rgb": f.cameras["cam0"].rgb, "stamp": f.cameras["cam0"].stamp_ns, "stamp_ns": f.cameras["cam0"].stamp_ns,
               "frame_id": "cam0_optical", "info": None} for f in frames[start:start + T]]
        return SimpleNamespace(num_views=1, num_steps=T, step_ids=tuple(range(start, start + T)), frames=fr,
                               camera_names=("cam0",))

    for variant, name in CONFIGS.items():
        cfg = load_model_config(name)
        cfg.pop("name")
        cfg.update(img_size=56, embed_dim=32, depth=5, num_heads=2, patch_embed="conv", dpt_layers=[0, 2, 3, 4],
                   camera_head={"trunk_depth": 1, "num_heads": 2}, dpt={"features": 8, "out_channels": [8, 8, 16, 16]})
        cfg["page4d"] = dict(cfg["page4d"], mask_block=1, bias_blocks=[2, 3])
        path = tmp_path / f"{name}-small.yaml"
        path.write_text(yaml.safe_dump(cfg))
        p = Pipeline(PipelineConfig(cameras=["cam0"], device="cpu", model_config=str(path), target_width=70,
                                    checkpoint=str(DATA / f"checkpoint_{variant}.pt"), num_steps=3, keypoints_max=16,
                                    keypoints_geometry_check="correct", mask_threshold=1.0))
        assert p.predictor.model.track_head is None
        results = [p.process(window(w)) for w in range(3)]
        kps = [c.keypoints for r in results for s in r.steps for c in s.cameras.values()]
        assert kps and all(k is not None for k in kps), variant
        assert sum(int(k.visible.sum()) for k in kps) > 0, variant
        dyn = results[-1].steps[-1].cameras["cam0"].dynamic
        assert dyn.shape == (84, 140) and np.isfinite(dyn).all() and 0 < dyn.mean() < 1
