"""The seeds' released models end to end: 4D-VGGT v1.0 (the release-format fixture test/data/model/4dvggt_small.pt,
``model.config: 4d-vggt-small``) and PAGE-4D's two checkpoints (test/data/model/page4d_small/, with
config/models/page4d.yaml / page4d-mask.yaml scaled to the fixture's dimensions as the parity test does) through
``vggt4d-replay`` (offline and through the real node over localhost DDS) on small ``vggt4d-synth`` bags with 1 and
2 cameras.

Checked: each checkpoint loads strictly; every window runs; depth, odometry, dynamic masks and keypoints are
published for every output step; ``WindowStatus`` / diagnostics name the output sources (the release and PAGE-4D
have no track head: keypoints are geometric; masks: the training-free estimate for the release, PAGE-4D's mask
predictor for PAGE-4D); the published numbers are a direct :class:`Predictor` run's on the same frames (depth x
the status' scale, intrinsics, the thresholded mask, the first window's poses in odom); the Predictor's pose and
depth are exactly the model called directly on the preprocessed window (1 camera: the release's computation); the
node through ROS publishes what the offline replay writes.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open
from scipy.spatial.transform import Rotation
from test_model_page4d_parity import small_config
from test_replay import read_mcap, stamp

from vggt4d_ros.eval.config import load_params
from vggt4d_ros.eval.offline import pipeline_config
from vggt4d_ros.perception.keypoints import static_projection
from vggt4d_ros.model import build_model_from_config, load_checkpoint
from vggt4d_ros.perception.pipeline import Pipeline
from vggt4d_ros.ros.conversions import depth_from_msg, image_to_rgb
from vggt4d_ros.tools.replay import main as replay
from vggt4d_ros.tools.synth_cli import main as synth

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "test" / "data" / "model"
STEPS, T = 5, 3  # bag steps; window of 3 steps, stride 1: windows end at steps 2, 3, 4
W, H = 112, 84  # bag images; the model grid is 56 x 42
#: model -> (checkpoint, mask source, extra node parameters)
MODELS = {"4d-vggt": (DATA / "4dvggt_small.pt", "geometric", {}),
          "page4d": (DATA / "page4d_small" / "checkpoint_nomask.pt", "page4d", {}),
          # the fixture's random mask predictor scores 0.47-0.65 here: at the default threshold 0.5 it calls 99 %
          # of the pixels dynamic and (no track head) nearly every keypoint with them
          "page4d-mask": (DATA / "page4d_small" / "checkpoint_mask.pt", "page4d", {"mask": {"threshold": 0.6}})}
THROUGH_ROS = [("4d-vggt", 1), ("4d-vggt", 2), ("page4d", 2), ("page4d-mask", 1)]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("release_e2e")


def _model_config(work: Path, model: str) -> str:
    """``model.config`` of a case: the 4D-VGGT fixture's own config, or PAGE-4D's configs at the fixture's size."""
    if model == "4d-vggt":
        return "4d-vggt-small"
    with safe_open(str(DATA / "page4d_small" / "io.safetensors"), "pt") as f:
        build = json.loads(f.metadata()["build_model." + {"page4d": "nomask", "page4d-mask": "mask"}[model]])
    path = work / f"{model}-small.yaml"
    path.write_text(yaml.safe_dump(small_config(model, build)))
    return str(path)


@lru_cache(maxsize=None)
def _bag(work: Path, num_cameras: int) -> Path:
    path = work / f"synth{num_cameras}.mcap"
    assert synth([str(path), "--cameras", str(num_cameras), "--width", str(W), "--height", str(H),
                  "--duration", str(STEPS / 10), "--seed", "3", "--tracks", "64", "--quiet"]) == 0
    return path


@lru_cache(maxsize=None)
def _run(work: Path, model: str, num_cameras: int, mode: str):
    """(params file, decoded outputs) of one vggt4d-replay run."""
    tag = f"{model}-{num_cameras}"
    cfg = work / f"{tag}.yaml"
    if not cfg.exists():
        params = {"model": {"config": _model_config(work, model), "checkpoint": str(MODELS[model][0]),
                            "device": "cpu", "target_width": 56},
                  "cameras": ["cam0", "cam1"][:num_cameras], "window": {"num_steps": T, "stride": 1},
                  "keypoints": {"max_count": 16}, **MODELS[model][2],
                  # diagnostics often enough that a short, fast run still publishes some after a window
                  "diagnostics_period_s": 0.1}
        cfg.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    out = work / f"{tag}-{mode}"
    rc = replay([str(_bag(work, num_cameras)), "--config", str(cfg), "--out", str(out), "--quiet"]
                + (["--through-ros"] if mode == "ros" else []))
    log = out / "node.log"
    assert rc == 0, log.read_text()[-3000:] if log.exists() else rc
    return cfg, read_mcap(out / "outputs.mcap"), json.loads((out / "metrics.json").read_text())


def _by_stamp(msgs):
    return {stamp(m.header): m for _t, m in msgs}


def _pose(p) -> np.ndarray:
    T_ = np.eye(4)
    T_[:3, :3] = Rotation.from_quat([p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w]).as_matrix()
    T_[:3, 3] = [p.position.x, p.position.y, p.position.z]
    return T_


def _T_base_cam0(inp) -> np.ndarray:
    (tr,) = [tr for _t, m in inp["/tf_static"] for tr in m.transforms if tr.child_frame_id == "cam0_optical_frame"]
    T_ = np.eye(4)
    q, t = tr.transform.rotation, tr.transform.translation
    T_[:3, :3] = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
    T_[:3, 3] = [t.x, t.y, t.z]
    return T_


def tracking_values(out):
    """The tracking statuses of the diagnostics, in order."""
    return [s for _t, d in out["/diagnostics"] for s in d.status if s.name.endswith(": tracking")]


@pytest.mark.parametrize("num_cameras", [1, 2])
@pytest.mark.parametrize("model", list(MODELS))
def test_replay_publishes_what_the_predictor_computes(work, model, num_cameras):
    cfg, out, metrics = _run(work, model, num_cameras, "offline")
    checkpoint, mask_source, _ = MODELS[model]
    cams = ["cam0", "cam1"][:num_cameras]
    inp = read_mcap(_bag(work, num_cameras))

    # strict load: every tensor of the file, no note, nothing missing or left over
    params = load_params(cfg)
    probe = build_model_from_config(params["model.config"])
    report = load_checkpoint(probe, checkpoint)
    assert report.ok and not report.notes and report.num_tensors == len(probe.state_dict())

    # every window ran; every step was output with its status naming the sources
    assert metrics["runtime"]["windows"] == STEPS - T + 1 and metrics["runtime"]["steps_out"] == STEPS
    status = [m for _t, m in out["/vggt4d/status"]]
    results = [m for m in status if m.num_time_steps > 0]
    assert len(results) == STEPS - T + 1 and {m.window_index for m in results} == {1, 2, 3}
    assert {m.mask_source for m in results} == {mask_source}
    assert all(m.mask_source == "" for m in status if m.num_time_steps == 0)  # buffering acks
    stamps = [stamp(m.header) for _t, m in inp["/cam0/image_raw"]]
    odom = _by_stamp(out["/vggt4d/odometry"])
    assert sorted(odom) == stamps
    for c in cams:
        for topic in ("depth", "depth/camera_info", "dynamic_mask", "keypoints"):
            assert sorted(_by_stamp(out[f"/vggt4d/{c}/{topic}"])) == stamps, (c, topic)
    # keypoints: geometric (no track head) in a window that output any, none in one whose queries all failed
    kps = {c: _by_stamp(out[f"/vggt4d/{c}/keypoints"]) for c in cams}
    sources = []
    for w, m in enumerate(results):
        steps = stamps[:T] if w == 0 else [stamps[w + T - 1]]
        assert stamp(m.header) == steps[-1]
        n = sum(len(kps[c][st].keypoints) for c in cams for st in steps)
        assert m.keypoint_source == ("geometric" if n else "none"), (w, n, m.keypoint_source)
        sources.append(m.keypoint_source)
    assert "geometric" in sources
    last = {kv.key: kv.value for kv in tracking_values(out)[-1].values}
    assert (last["mask_source"], last["keypoint_source"]) == (mask_source, sources[-1])

    # a direct Predictor run on each window's frames, built as the pipeline builds it
    pipe = Pipeline(pipeline_config(params))
    predictor, V = pipe.predictor, num_cameras
    assert not getattr(predictor.model, "track_head", None)  # no track head in either release
    frames = {c: [image_to_rgb(m) for _t, m in inp[f"/{c}/image_raw"]] for c in cams}
    scale = {stamp(m.header): m.scale for m in results}
    thr = float(params["mask.threshold"])
    T_bc = _T_base_cam0(inp)
    checked = 0
    for w in range(STEPS - T + 1):
        rgbs = [frames[c][t] for t in range(w, w + T) for c in cams]
        pred = predictor.predict(rgbs, num_views=V, reference=("first",), time_index=list(range(w, w + T)))
        assert pred.dynamic_mask_source == mask_source
        if w == 0:
            # the Predictor's pose and depth are the model's on the preprocessed window, exactly (1 camera:
            # the release's own computation; 2 cameras: this project's grid, see the README)
            with torch.no_grad():
                direct = predictor.model(pred.raw["images"], num_views=V)
            assert torch.equal(direct["pose_enc"][0], pred.raw["pose_enc"])
            assert torch.equal(direct["depth"][0, ..., 0], pred.raw["depth"])
            if model == "4d-vggt":
                assert predictor.model.project_extensions == {}
        if w == 0:
            q0 = _by_stamp(out["/vggt4d/cam0/keypoints"])[stamps[0]].keypoints
            ids = {k.id: i for i, k in enumerate(q0)}
            geo = static_projection(pred.frames, np.array([(k.u, k.v) for k in q0]).reshape(-1, 2), 0)[0]
        new = range(T) if w == 0 else [T - 1]  # the first window outputs all its steps, later ones the newest
        for t in new:
            st = stamps[w + t]
            s_ = scale[stamps[w + T - 1]]  # the window's status (at its newest step; older ones were acks)
            for v, c in enumerate(cams):
                fp = pred.frame(t, v)
                got = depth_from_msg(_by_stamp(out[f"/vggt4d/{c}/depth"])[st])
                np.testing.assert_allclose(got, fp.depth * s_, rtol=1e-4, atol=1e-6, equal_nan=True,
                                           err_msg=f"{model} {c} step {w + t}")
                K = np.asarray(_by_stamp(out[f"/vggt4d/{c}/depth/camera_info"])[st].k).reshape(3, 3)
                np.testing.assert_allclose(K, fp.intrinsics, rtol=1e-6)
                m = _by_stamp(out[f"/vggt4d/{c}/dynamic_mask"])[st]
                mask = np.frombuffer(bytes(m.data), np.uint8).reshape(m.height, m.width)
                sure = np.abs(fp.dynamic_mask - thr) > 1e-4
                assert np.array_equal((mask == 255)[sure], (fp.dynamic_mask > thr)[sure]), (model, c, w + t)
            if w == 0:
                # keypoints (no track head): the first step's queries where the static projection puts them
                for v, c in enumerate(cams):
                    for k in _by_stamp(out[f"/vggt4d/{c}/keypoints"])[st].keypoints:
                        if k.id in ids:
                            np.testing.assert_allclose((k.u, k.v), geo[t * V + v, ids[k.id]], atol=1e-3)
                            checked += 1
                # odom = base_link at the first step; camera 0's motion from the window's poses, x its scale
                E = pred.frame(t, 0).world_from_cam.copy()
                E[:3, 3] *= s_
                np.testing.assert_allclose(_pose(odom[st].pose.pose), T_bc @ E @ np.linalg.inv(T_bc), atol=1e-5)
    # every query at its own pixel at the first step; later steps where a static track survived (with these
    # random fixtures: 4D-VGGT's, PAGE-4D's die after the first step)
    assert ids and checked >= len(ids), (checked, len(ids))


@pytest.mark.parametrize("model,num_cameras", THROUGH_ROS)
def test_node_through_ros_publishes_what_the_replay_writes(work, model, num_cameras):
    _, off, _ = _run(work, model, num_cameras, "offline")
    _, ros, metrics = _run(work, model, num_cameras, "ros")
    assert metrics["run"]["mode"] == "through-ros" and metrics["runtime"]["windows"] == STEPS - T + 1
    for topic in ("/vggt4d/odometry", "/vggt4d/status", "/vggt4d/cam0/depth", "/vggt4d/cam0/dynamic_mask",
                  f"/vggt4d/cam{num_cameras - 1}/keypoints"):
        a, b = _by_stamp(ros[topic]), _by_stamp(off[topic])
        assert sorted(a) == sorted(b), topic
        for st, m in b.items():
            r = a[st]
            if topic.endswith("odometry"):
                np.testing.assert_allclose(_pose(r.pose.pose), _pose(m.pose.pose), atol=1e-5)
            elif topic.endswith("status"):
                assert (r.num_time_steps, r.mask_source, r.keypoint_source, r.scale_source) == (
                    m.num_time_steps, m.mask_source, m.keypoint_source, m.scale_source)
                assert r.scale == pytest.approx(m.scale, rel=1e-5)
            elif topic.endswith("depth"):
                np.testing.assert_allclose(depth_from_msg(r), depth_from_msg(m), rtol=1e-5, equal_nan=True)
            elif topic.endswith("keypoints"):
                assert [k.id for k in r.keypoints] == [k.id for k in m.keypoints]
                np.testing.assert_allclose([(k.u, k.v) for k in r.keypoints], [(k.u, k.v) for k in m.keypoints],
                                           atol=1e-3)
            else:
                assert bytes(r.data) == bytes(m.data), (topic, st)
    # the node's diagnostics name the sources its windows had
    values = [{kv.key: kv.value for kv in s.values} for s in tracking_values(ros)]
    seen = {(v["mask_source"], v["keypoint_source"]) for v in values if "mask_source" in v}
    offline = {(m.mask_source, m.keypoint_source) for _t, m in off["/vggt4d/status"] if m.num_time_steps > 0}
    assert seen and seen <= offline and {MODELS[model][1]} == {a for a, _ in seen}, (seen, offline)
