"""Loud, exact parameter and start-up errors (issue 15): unknown names with the closest valid one, range, type
and cross-parameter errors in one line without a traceback, a silent camera warned about with diagnostics at
WARN, and the exit status of a failed configure (autostart: non-zero, so launch sees it; under a lifecycle
manager: alive). Real rclpy: the node in-process (node_harness) and ``vggt4d-node`` as a subprocess."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from vggt4d_ros.frontend import Config, ParamError
from vggt4d_ros.rosenv import localhost_env

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- the rules
@pytest.mark.parametrize("given, text", [
    ({"window.num_step": 3}, "unknown parameter 'window.num_step' (did you mean 'window.num_steps'?)"),
    ({"model.devise": "cpu"}, "unknown parameter 'model.devise' (did you mean 'model.device'?)"),
    ({"cameras": ["a"], "a.image_topik": "/x"}, "unknown parameter 'a.image_topik' (did you mean 'a.image_topic'?)"),
    ({"mask.threshold": 2.0}, "mask.threshold must be in [0, 1], got 2.0"),
    ({"window.num_steps": "four"}, "window.num_steps must be an integer, got 'four' (str)"),
    ({"model.device": "gpu"}, "model.device must be one of ['cpu', 'cuda', 'auto'], got 'gpu'"),
    ({"window.num_steps": 4, "window.stride": 4}, "window.stride (4) must be below window.num_steps (4)"),
    ({"window.num_steps": 4, "window.stride": 6}, "window.stride (6) must be below window.num_steps (4)"),
    ({"cameras": ["a", "b"], "sync.min_cameras": 3}, "sync.min_cameras (3) exceeds the number of cameras (2)"),
    ({"scale.source": "depth"}, "scale.source is depth but scale.depth_topic is empty"),
])
def test_each_error_is_one_exact_line(given, text):
    with pytest.raises(ParamError) as e:
        Config.from_params(given)
    msg = str(e.value)
    assert text in msg and "\n" not in msg


def test_unknown_parameters_allowed_on_request_and_defaults_come_from_the_table():
    cfg = Config.from_params({"window.num_step": 3, "mask.threshold": 1}, allow_unknown=True)
    assert cfg.warnings == ("unknown parameter 'window.num_step' (did you mean 'window.num_steps'?): ignored",)
    # valid but self-defeating: one shared step between windows cannot chain (said at start)
    w = Config.from_params({"window.num_steps": 3, "window.stride": 2}).warnings
    assert len(w) == 1 and "leaves 1 time step shared" in w[0]
    assert "window.num_step" not in cfg and cfg["mask.threshold"] == 1.0 and isinstance(cfg["mask.threshold"], float)
    from vggt4d_ros.frontend.params import NODE_PARAMS
    from vggt4d_ros.perception.pipeline import PipelineConfig, pipeline_config_from_params

    # One source of defaults: the pipeline's own defaults are the table's (keypoints.geometry_check was "off"
    # in the pipeline but "correct" in the table before).
    table = {p.name: p.default for p in NODE_PARAMS}
    assert PipelineConfig(cameras=["cam0"]) == pipeline_config_from_params(Config.from_params({}))
    assert PipelineConfig(cameras=["cam0"]).keypoints_geometry_check == table["keypoints.geometry_check"]
    with pytest.raises(TypeError):
        cfg._values["mask.threshold"] = 0.1  # immutable snapshot


# ---------------------------------------------------------------------------------------------- in-process
def test_in_process_node_refuses_unknown_names_and_live_cross_parameter_errors():
    import rclpy
    from rclpy.parameter import Parameter

    from vggt4d_ros.ros.node import Vggt4dNode

    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    try:
        with pytest.raises(ParamError, match="did you mean 'model.device'"):
            Vggt4dNode("vggt4d_params", context=ctx, parameter_overrides=[
                Parameter("autostart", value=False), Parameter("model.devise", value="cpu")])
        # (another name than the harness's node: rcl's /rosout logger is per node name in a process)
        node = Vggt4dNode("vggt4d_params", context=ctx, allow_unknown_parameters=True, parameter_overrides=[
            Parameter("autostart", value=False), Parameter("model.devise", value="cpu")])
        before = node.cfg
        res = node.set_parameters([Parameter("mask.threshold", value=1.5)])[0]
        assert not res.successful and "mask.threshold" in res.reason and "1.5" in res.reason  # rclpy's range check
        res = node.set_parameters([Parameter("mask.threshold", value=0.25)])[0]
        assert res.successful and node.cfg["mask.threshold"] == 0.25
        assert node.cfg is not before and before["mask.threshold"] == 0.5  # a new snapshot, the old one intact
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def test_silent_camera_warns_in_the_log_and_diagnostics_go_warn(monkeypatch, capfd):
    import numpy as np  # noqa: F401
    from node_harness import DT, T0, NodeHarness

    import vggt4d_ros.frontend.frontend as fe_mod

    monkeypatch.setattr(fe_mod, "CAMERA_TIMEOUT_S", 1.0)
    h = NodeHarness("silent", {}, {"sync.min_cameras": 0}, diagnostics=True, rosout=True)
    try:
        def tracking():
            for arr in reversed(h.diag):
                for st in arr.status:
                    if st.name.endswith(": tracking"):
                        return st
            return None

        err = []

        def warned():
            """The warnings, from /rosout or (when /rosout matched late on a loaded machine) the console."""
            text = "no images from camera cam1 on /cam1/image_raw"
            err.append(capfd.readouterr().err)
            rosout = [m.msg for m in h.logs if text in m.msg]
            console = [ln for ln in "".join(err).splitlines() if text in ln and "[WARN]" in ln]
            return rosout if len(rosout) >= len(console) else console

        t_end, i = time.monotonic() + 60, 0
        while time.monotonic() < t_end:  # only cam0 publishes, at 5 Hz
            h.info["cam0"].publish(h.camera_info("cam0", T0 + i * DT))
            h.img["cam0"].publish(h.image("cam0", T0 + i * DT))
            i += 1
            time.sleep(0.2)
            st = tracking()
            if warned() and i > 15 and st is not None and st.level == b"\x01" and "cam0" not in st.message:
                break
        assert warned(), [m.msg for m in h.logs]
        st = tracking()
        assert st.level == b"\x01" and "initializing" in st.message and "no images from cam1" in st.message, st
        assert "cam0" not in st.message  # cam0 delivers
        assert len(warned()) <= 1 + (time.monotonic() - t_end + 60) / 5.0  # throttled: at most every 5 s
    finally:
        h.close()


# ---------------------------------------------------------------------------------------------- vggt4d-node
def _node(tmp_path, params, *extra, wait=None):
    f = tmp_path / "params.yaml"
    f.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    cmd = [sys.executable, "-m", "vggt4d_ros.ros.node", *extra, "--ros-args", "--params-file", str(f)]
    return subprocess.Popen(cmd, env=localhost_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


@pytest.mark.parametrize("params, text", [
    ({"window": {"num_step": 3}}, "unknown parameter 'window.num_step' (did you mean 'window.num_steps'?)"),
    ({"mask": {"threshold": 2.0}}, "mask.threshold must be in [0, 1], got 2.0"),
    ({"window": {"num_steps": 4, "stride": 5}}, "window.stride (5) must be below window.num_steps (4)"),
])
def test_vggt4d_node_bad_params_file_exits_2_with_one_line(tmp_path, params, text):
    p = _node(tmp_path, dict(params, autostart=False))
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 2, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert lines == [f"vggt4d-node: invalid parameters: {lines[0].split('invalid parameters: ', 1)[1]}"], out
    assert text in lines[0] and "Traceback" not in out


def test_failed_configure_exits_1_with_autostart_and_stays_alive_under_a_lifecycle_manager(tmp_path):
    bad = {"model": {"checkpoint": "/nonexistent/w.safetensors", "device": "cpu"}}
    p = _node(tmp_path, dict(bad, autostart=True))
    out, _ = p.communicate(timeout=180)
    assert p.returncode == 1, out
    assert "configure failed: model.checkpoint '/nonexistent/w.safetensors' does not exist" in out
    assert "Traceback" not in out
    p = _node(tmp_path, dict(bad, autostart=False))
    try:
        lines = []
        for line in p.stdout:  # the node is up (parameters declared) ...
            lines.append(line)
            if "waiting for configure" in line:
                break
        time.sleep(3.0)
        assert p.poll() is None, "".join(lines)  # ... and stays alive, unconfigured, for its lifecycle manager
    finally:
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=60)
    assert p.returncode == 0, out


def test_allow_unknown_parameters_flag_logs_and_starts(tmp_path):
    p = _node(tmp_path, {"autostart": False, "window": {"num_step": 3}}, "--allow-unknown-parameters")
    lines = []
    try:
        for line in p.stdout:  # until the node said it (it then runs, unconfigured)
            lines.append(line)
            if "ignored" in line:
                break
        time.sleep(1.0)
        assert p.poll() is None, "".join(lines)
    finally:
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=60)
    assert p.returncode == 0, "".join(lines) + out
    assert "unknown parameter 'window.num_step' (did you mean 'window.num_steps'?): ignored" in "".join(lines)
