"""config/*.yaml and launch/*.launch.py reference real executables, arguments and parameters.

launch and launch_ros do not exist on this machine, so launch files are checked by reading their syntax
tree; parameter files are parsed by rcl itself (as `--ros-args --params-file` does) into a real node.
"""
import ast
import re
from pathlib import Path

import pytest
import yaml

from vggt4d_ros.ros.params import CAMERA_PARAMS, NODE_PARAMS, validate

ROOT = Path(__file__).resolve().parents[1]
NODE_YAMLS = ["tiny.yaml", "default.yaml", "jetson.yaml", "demo.yaml"]


def _flatten(d, prefix=""):
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _flatten(v, key + ".")
        else:
            yield key, v


@pytest.mark.parametrize("name", NODE_YAMLS)
def test_yaml_parameters_are_declared_and_valid(name):
    doc = yaml.safe_load((ROOT / "config" / name).read_text())
    params = doc["/**"]["ros__parameters"]
    flat = dict(_flatten(params))
    node_params = {p.name: p for p in NODE_PARAMS}
    cams = flat["cameras"]
    declared = dict(node_params)
    for c in cams:
        declared.update({f"{c}.{p.name}": p for p in CAMERA_PARAMS})
    unknown = sorted(set(flat) - set(declared))
    assert not unknown, f"{name}: parameters the node does not declare: {unknown}"
    missing = sorted(set(node_params) - set(flat))
    assert not missing, f"{name}: node parameters not documented in the file: {missing}"
    for k, v in flat.items():
        reason = validate(declared[k], v)
        assert reason is None, f"{name}: {reason}"
    # Every line with a value carries a comment or sits under a commented section (units and ranges).
    text = (ROOT / "config" / name).read_text()
    assert text.count("#") >= 40


@pytest.mark.parametrize("name", NODE_YAMLS)
def test_rcl_parses_params_file_into_the_node(name):
    """The same YAML passed as --ros-args --params-file, parsed by rcl, sets the node's parameters."""
    import rclpy

    from vggt4d_ros.ros.node import build_node_class

    flat = dict(_flatten(yaml.safe_load((ROOT / "config" / name).read_text())["/**"]["ros__parameters"]))
    ctx = rclpy.context.Context()
    rclpy.init(args=["vggt4d-node", "--ros-args", "--params-file", str(ROOT / "config" / name),
                     "-p", "autostart:=false"], context=ctx)
    try:
        node = build_node_class()(context=ctx)
        for key in ("model.config", "model.precision", "window.num_steps", "window.stride", "cameras",
                    "cam1.image_topic", "odom.pose_covariance"):
            value = node.get_parameter(key).value
            want = flat[key]
            assert (list(value) if isinstance(value, (list, tuple)) else value) == want, key
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def _launch_calls(path):
    tree = ast.parse(path.read_text())
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fname = getattr(node.func, "id", getattr(node.func, "attr", ""))
            kws = {}
            for kw in node.keywords:
                try:
                    kws[kw.arg] = ast.literal_eval(kw.value)
                except ValueError:
                    kws[kw.arg] = kw.value
            calls.append((fname, kws, node))
    return calls


@pytest.mark.parametrize("launch", ["vggt4d.launch.py", "replay.launch.py"])
def test_launch_files_reference_installed_executables_and_configs(launch):
    path = ROOT / "launch" / launch
    calls = _launch_calls(path)
    cmake = (ROOT / "CMakeLists.txt").read_text()
    installed = set(re.findall(r"scripts/(vggt4d_\w+)", cmake))
    nodes = [kw for f, kw, _ in calls if f in ("Node", "LifecycleNode") and kw.get("package") == "vggt4d_ros"]
    assert nodes, "no vggt4d_ros node in the launch file"
    for kw in nodes:
        assert kw["executable"] in installed, f"{kw['executable']} is not installed by CMakeLists.txt"
    assert any(kw.get("executable") == "vggt4d_node" for kw in nodes)
    text = path.read_text()
    for cfg in re.findall(r'"config", "(\w+\.(?:yaml|rviz))"', text):
        assert (ROOT / "config" / cfg).is_file(), cfg
    assert "use_sim_time" in text
    args = {kw.get("name", None) for f, kw, n in calls if f == "DeclareLaunchArgument"}
    args |= {n.args[0].value for f, kw, n in calls if f == "DeclareLaunchArgument" and n.args}
    if launch == "vggt4d.launch.py":
        assert {"config", "namespace", "use_sim_time", "remappings"} <= args
    else:
        assert {"bag", "out", "config"} <= args


def test_replay_launch_arguments_are_accepted_by_the_bag_cli():
    from vggt4d_ros.bag.cli import _parser

    text = (ROOT / "launch" / "replay.launch.py").read_text()
    tree = ast.parse(text)
    lists = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "arguments" and isinstance(node.value, ast.List):
            items = []
            for elt in node.value.elts:
                items.append(elt.value if isinstance(elt, ast.Constant) else "X")
            lists.append(items)
    assert len(lists) == 2
    for argv in lists:
        argv = [("5" if a == "X" and prev in ("--lock-step-timeout", "--rate") else a)
                for prev, a in zip([""] + argv, argv)]
        _parser().parse_args(argv)  # raises SystemExit on an unknown option


def test_rviz_config_shows_node_topics():
    doc = yaml.safe_load((ROOT / "config" / "vggt4d.rviz").read_text())
    topics = {d["Topic"]["Value"] for d in doc["Visualization Manager"]["Displays"] if "Topic" in d}
    assert {"/vggt4d/points/fused", "/vggt4d/cam0/depth", "/vggt4d/cam0/dynamic_mask", "/vggt4d/odometry"} <= topics
    assert doc["Visualization Manager"]["Global Options"]["Fixed Frame"] == "odom"
