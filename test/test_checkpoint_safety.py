"""Checkpoints at the node level (test_model_checkpoint.py covers vggt4d_ros.model.load_checkpoint itself):
a pickle that would execute code is refused by the node's configure without running it, truncated or
corrupt files fail configure with a clear error naming the file, and the node stays alive, unconfigured.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from vggt4d_ros.perception.pipeline import EMBEDDED_DIR
from vggt4d_ros.rosenv import localhost_env

ROOT = Path(__file__).resolve().parents[1]
TINY = EMBEDDED_DIR / "tiny.safetensors"
pytestmark = pytest.mark.skipif(not TINY.is_file(), reason="the embedded tiny weights are not in this checkout")


class _Payload:
    """Unpickling this creates a marker file (stands in for arbitrary code execution)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    sd = load_file(str(TINY))
    out = {"marker": d / "pwned"}
    good = d / "good.pt"
    torch.save({"model": sd}, good)
    out["good"] = good
    evil = d / "evil.pt"
    torch.save({"model": dict(sd, payload=_Payload(out["marker"]))}, evil)
    out["evil"] = evil
    cut = d / "cut.safetensors"
    cut.write_bytes(TINY.read_bytes()[: TINY.stat().st_size // 3])
    out["cut_st"] = cut
    cut_pt = d / "cut.pt"
    cut_pt.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    out["cut_pt"] = cut_pt
    junk = d / "junk.safetensors"
    junk.write_bytes(os.urandom(4096))
    out["junk"] = junk
    flipped = d / "flipped.safetensors"
    raw = bytearray(TINY.read_bytes())
    raw[8:40] = b"\x00" * 32  # the JSON header destroyed
    flipped.write_bytes(bytes(raw))
    out["header"] = flipped
    wrong = d / "wrong.safetensors"
    save_file({k: v.contiguous() for k, v in list(sd.items())[:5]}, str(wrong))
    out["wrong"] = wrong
    return out


def _configure(checkpoint):
    """Configure an in-process node with ``checkpoint``; returns (state label, node kept alive answers)."""
    import rclpy
    from rclpy.parameter import Parameter

    from vggt4d_ros.ros.node import Vggt4dNode

    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    try:
        node = Vggt4dNode(context=ctx, parameter_overrides=[
            Parameter("autostart", value=False), Parameter("model.checkpoint", value=str(checkpoint)),
            Parameter("model.device", value="cpu"), Parameter("model.target_width", value=112)])
        node.trigger_configure()
        state = node._state_machine.current_state[1]
        alive = node.get_parameter("model.checkpoint").value == str(checkpoint)
        node.destroy_node()
        return state, alive
    finally:
        rclpy.shutdown(context=ctx)


def test_good_pickle_checkpoint_configures(files):
    """Control: the same weights as a plain .pt state dict load, so the refusals below are about the file."""
    state, _ = _configure(files["good"])
    assert state == "inactive"


def test_code_executing_pickle_is_refused_by_configure(files, capfd):
    marker = files["marker"]
    state, alive = _configure(files["evil"])
    err = capfd.readouterr().err
    assert state == "unconfigured" and alive
    assert not marker.exists(), "the payload ran"
    assert "configure failed" in err and "evil.pt" in err and "refused" in err, err[-2000:]


@pytest.mark.parametrize("key,words", [
    ("cut_st", ["cut.safetensors", "safetensors"]),
    ("cut_pt", ["cut.pt", "PyTorch"]),
    ("junk", ["junk.safetensors"]),
    ("header", ["flipped.safetensors"]),
    ("wrong", ["wrong.safetensors", "missing"]),
])
def test_corrupt_checkpoints_fail_configure_clearly(files, capfd, key, words):
    state, alive = _configure(files[key])
    err = capfd.readouterr().err
    assert state == "unconfigured" and alive
    line = next((ln for ln in err.splitlines() if "configure failed" in ln), "")
    assert line, err[-2000:]
    for w in words:
        assert w in line, line
    assert "Traceback" not in err  # one clear line, not a stack dump


def test_node_process_refuses_evil_checkpoint_and_stays_up(files, tmp_path):
    """The console script with autostart: configure fails, nothing runs, and the process exits with code 1 (so
    a launch file sees it; issue 15); under a lifecycle manager (autostart false) it would stay up."""
    marker = files["marker"]
    exe = Path(sys.executable).parent / "vggt4d-node"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "vggt4d_ros.ros.node"]
    log = tmp_path / "node.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd + ["--ros-args", "--params-file", str(ROOT / "config/tiny.yaml"),
                                       "-p", f"model.checkpoint:={files['evil']}"],
                                env=localhost_env(), stdout=f, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=30)
    text = log.read_text(errors="replace")
    assert "configure failed" in text and "refused" in text and "evil.pt" in text, text
    assert not marker.exists()
    assert rc == 1, text
