"""config/*.yaml and launch/*.launch.py reference real executables, arguments and parameters.

launch and launch_ros do not exist on this machine, so launch files are checked by reading their syntax
tree; parameter files are parsed by rcl itself (as `--ros-args --params-file` does) into a real node.
"""
import ast
import re
import sys
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

    from vggt4d_ros.ros.node import Vggt4dNode

    flat = dict(_flatten(yaml.safe_load((ROOT / "config" / name).read_text())["/**"]["ros__parameters"]))
    ctx = rclpy.context.Context()
    rclpy.init(args=["vggt4d-node", "--ros-args", "--params-file", str(ROOT / "config" / name),
                     "-p", "autostart:=false"], context=ctx)
    try:
        node = Vggt4dNode(context=ctx)
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


# ------------------------------------------------------------------------------------------------
# Every executable a launch file starts parses the argv launch_ros gives it
# ------------------------------------------------------------------------------------------------
# launch and launch_ros are not installable here: the launch files run against recording stand-ins for
# their classes, and the command line of each Node is assembled as launch_ros does it:
#   EXE ARGUMENTS... [--ros-args ROS_ARGUMENTS...] --ros-args -r __node:=NAME [-r __ns:=/NS]
#       [--params-file FILE ...] [-r FROM:=TO ...]
# (dict parameters go to a temporary YAML file under "/**": ros__parameters, as launch_ros writes them).

LAUNCH_FILES = sorted(p.name for p in (ROOT / "launch").glob("*.launch.py"))
LAUNCH_CLASSES = ("Node", "LifecycleNode", "ExecuteProcess")


class _Recorded:
    """Stand-in for any launch class: keeps its constructor arguments."""

    registry: list = []

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        _Recorded.registry.append(self)


class _LaunchConfiguration(_Recorded):
    def perform(self, context):
        return context.launch_configurations[self.args[0]]


def _launch_stubs(share):
    import types

    classes = {"LaunchConfiguration": _LaunchConfiguration}

    def module(name):
        mod = types.ModuleType(name)

        def getattr_(attr):
            if attr.startswith("__"):
                raise AttributeError(attr)
            cls = classes.get(attr) or type(attr, (_Recorded,), {})
            classes[attr] = cls
            return cls
        mod.__getattr__ = getattr_
        return mod

    mods = {n: module(n) for n in ("launch", "launch.actions", "launch.event_handlers", "launch.events",
                                   "launch.substitutions", "launch.conditions", "launch_ros",
                                   "launch_ros.actions")}
    ament = types.ModuleType("ament_index_python")
    ament.packages = types.ModuleType("ament_index_python.packages")
    ament.packages.get_package_share_directory = lambda pkg: str(share)
    mods["ament_index_python"], mods["ament_index_python.packages"] = ament, ament.packages
    return mods, classes


def _evaluate_launch(path, monkeypatch, tmp_path, values):
    """Run a launch file against the stand-ins; returns [(class name, kwargs)] of every process it starts."""
    import runpy
    import types

    mods, classes = _launch_stubs(ROOT)  # the package's share directory has launch/ and config/ as here
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    _Recorded.registry = []
    description = runpy.run_path(str(path))["generate_launch_description"]()
    declared = {}
    for action in _Recorded.registry:
        if type(action).__name__ == "DeclareLaunchArgument":
            declared[action.args[0]] = action.kwargs.get("default_value")
    config = {k: v for k, v in declared.items() if v is not None}
    config.update(values)
    missing = sorted(k for k in declared if k not in config)
    assert not missing, f"{path.name}: give the test a value for the required arguments {missing}"
    context = types.SimpleNamespace(launch_configurations=config)
    for action in list(_Recorded.registry):
        if type(action).__name__ == "OpaqueFunction":
            action.kwargs["function"](context)
    del description
    procs = [a for a in _Recorded.registry if type(a).__name__ in LAUNCH_CLASSES]
    return procs, context


def _text(value, context):
    if isinstance(value, _LaunchConfiguration):
        return value.perform(context)
    assert isinstance(value, str), f"unexpected substitution {value!r}"
    return value


def _launch_ros_argv(proc, context, tmp_path):
    """The command line launch_ros runs for a Node/LifecycleNode (ExecuteProcess: its cmd)."""
    kw = proc.kwargs
    if type(proc).__name__ == "ExecuteProcess":
        cmd = [_text(c, context) for c in kw["cmd"]]
        return cmd[0], cmd[1:]
    argv = [_text(a, context) for a in kw.get("arguments", [])]
    if kw.get("ros_arguments"):
        argv += ["--ros-args"] + [_text(a, context) for a in kw["ros_arguments"]]
    argv += ["--ros-args"]
    if kw.get("name") is not None:
        argv += ["-r", f"__node:={_text(kw['name'], context)}"]
    if kw.get("namespace") is not None:
        ns = _text(kw["namespace"], context)
        argv += ["-r", f"__ns:={ns if ns.startswith('/') else '/' + ns}"]
    for i, params in enumerate(kw.get("parameters", [])):
        if isinstance(params, dict):
            f = tmp_path / f"launch_params_{id(proc)}_{i}.yaml"
            f.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
            params = str(f)
        argv += ["--params-file", _text(params, context)]
    for src, dst in kw.get("remappings", []):
        argv += ["-r", f"{_text(src, context)}:={_text(dst, context)}"]
    return _text(kw["executable"], context), argv


class _Parsed(BaseException):
    """Raised by the patched ArgumentParser.parse_args once an executable's own arguments parsed."""

    def __init__(self, parser, args, namespace):
        super().__init__()
        self.parser, self.args, self.namespace = parser, args, namespace


def _parse_like_the_executable(executable, argv, monkeypatch):
    """Run the installed script's main() with sys.argv = [executable] + argv up to its argparse call."""
    import argparse
    import importlib

    script = (ROOT / "scripts" / executable).read_text()
    module = re.search(r"^from ([\w.]+) import main$", script, re.M).group(1)
    main = importlib.import_module(module).main
    original = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        ns = original(self, args, namespace)  # SystemExit(2) on an argument it does not know
        raise _Parsed(self, list(sys.argv[1:] if args is None else args), ns)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
    monkeypatch.setattr(sys, "argv", [executable] + list(argv))
    try:
        main()
    except _Parsed as parsed:
        return parsed
    finally:
        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", original)
    raise AssertionError(f"{executable} returned without parsing its arguments")


# Values for the launch arguments that have no default (and a namespace, so __ns is exercised).
LAUNCH_VALUES = {"bag": "/tmp/some_bag.mcap", "namespace": "robot1"}


@pytest.mark.parametrize("launch", LAUNCH_FILES)
def test_every_launch_executable_parses_the_argv_launch_ros_gives_it(launch, monkeypatch, tmp_path):
    path = ROOT / "launch" / launch
    procs, context = _evaluate_launch(path, monkeypatch, tmp_path, LAUNCH_VALUES)
    # Every process constructor in the source was evaluated (none hides in an unexecuted branch).
    in_source = [f for f, _, _ in _launch_calls(path) if f in LAUNCH_CLASSES]
    assert len(procs) == len(in_source) > 0
    ours = [p for p in procs if p.kwargs.get("package") == "vggt4d_ros"]
    assert ours, f"{launch} starts no vggt4d_ros executable"
    for proc in procs:
        executable, argv = _launch_ros_argv(proc, context, tmp_path)
        if proc not in ours:
            for i, a in enumerate(argv[:-1]):  # e.g. rviz2 -d <share>/config/vggt4d.rviz: the file exists
                if a == "-d":
                    assert Path(argv[i + 1]).is_file(), argv[i + 1]
            continue
        assert "--params-file" in argv or "vggt4d_bag" == executable
        parsed = _parse_like_the_executable(executable, argv, monkeypatch)
        # The executable's own parser saw no ROS argument ...
        assert "--ros-args" not in parsed.args and not any(a.startswith("__") for a in parsed.args), parsed.args
        # ... and would have refused the raw command line: the stripping is what makes it start.
        with pytest.raises(SystemExit) as exc:
            parsed.parser.parse_args(argv)
        assert exc.value.code == 2
        if executable == "vggt4d_bag":
            assert parsed.namespace.command in ("play", "record")


def test_launch_argv_check_catches_an_unknown_argument(monkeypatch):
    """The check above fails for an argument the executable does not know (it can fail)."""
    with pytest.raises(SystemExit) as exc:
        _parse_like_the_executable("vggt4d_bag", ["play", "x.mcap", "--no-such-flag", "--ros-args", "-r",
                                                  "__node:=p"], monkeypatch)
    assert exc.value.code == 2


def test_strip_ros_args_uses_rcl_and_falls_back_without_rclpy(monkeypatch):
    from vggt4d_ros.cli_util import strip_ros_args

    argv = ["play", "b.mcap", "--rate", "2", "--ros-args", "-r", "__node:=player", "-r", "__ns:=/robot",
            "--params-file", str(ROOT / "config" / "tiny.yaml"), "--", "--clock", "--ros-args", "-p", "a:=1"]
    want = ["play", "b.mcap", "--rate", "2", "--clock"]
    assert strip_ros_args(argv) == want
    assert strip_ros_args(["info", "x"]) == ["info", "x"]
    # rcl checks the ROS arguments: a params file that does not exist is refused in one line, status 2.
    with pytest.raises(SystemExit) as exc:
        strip_ros_args(["info", "x", "--ros-args", "--params-file", "/nonexistent.yaml"])
    assert exc.value.code == 2
    monkeypatch.setitem(sys.modules, "rclpy.utilities", None)  # import fails: the documented fallback
    assert strip_ros_args(argv) == want


# ------------------------------------------------------------------------------------------------
# config/default.yaml, the launch default: fails at once with one line naming what to set
# ------------------------------------------------------------------------------------------------

def test_default_yaml_fails_at_once_with_one_line_naming_the_checkpoint():
    import subprocess
    import time

    from vggt4d_ros.rosenv import localhost_env

    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "vggt4d_node"), "--ros-args", "--params-file",
         str(ROOT / "config" / "default.yaml"), "-r", "__node:=vggt4d"],
        env=localhost_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        deadline = time.monotonic() + 120
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline and not any("configure failed" in s for s in lines):
            if not sel.select(timeout=1.0):
                if proc.poll() is not None:
                    break
                continue
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
    finally:
        if proc.poll() is None:
            proc.send_signal(2)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    errors = [s for s in lines if "configure failed" in s]
    assert len(errors) == 1, "".join(lines)
    assert "set model.checkpoint" in errors[0]
    assert "Traceback" not in "".join(lines)


# ------------------------------------------------------------------------------------------------
# RViz: topics relative to the node's namespace, every one of them published by the node
# ------------------------------------------------------------------------------------------------

def _readme_published_topics():
    text = (ROOT / "README.md").read_text()
    table = text.split("### Published topics", 1)[1].split("\n\n", 2)[1]
    return set(re.findall(r"^\| `([^`]+)`", table, re.M))


def test_rviz_config_shows_node_topics_relative_to_its_namespace(monkeypatch, tmp_path):
    from vggt4d_ros.ros.messages import output_topics

    doc = yaml.safe_load((ROOT / "config" / "vggt4d.rviz").read_text())
    displays = doc["Visualization Manager"]["Displays"]
    topics = {d["Topic"]["Value"]: d for d in displays if "Topic" in d}
    assert topics and not [t for t in topics if t.startswith("/")], "RViz topics must be relative"
    # The launch file starts RViz in the node's namespace; the node is named vggt4d, so ~/x is vggt4d/x there.
    procs, context = _evaluate_launch(ROOT / "launch" / "vggt4d.launch.py", monkeypatch, tmp_path,
                                      {"namespace": "robot1"})
    node = next(p for p in procs if p.kwargs.get("executable") == "vggt4d_node")
    rviz = next(p for p in procs if p.kwargs.get("executable") == "rviz2")
    assert _text(rviz.kwargs["namespace"], context) == _text(node.kwargs["namespace"], context) == "robot1"
    name = _text(node.kwargs["name"], context)
    private = {t.split("/", 1)[1] for t in topics if t.startswith(name + "/")}
    assert len(private) == len(topics), f"every RViz topic is one of node {name}'s: {sorted(topics)}"
    # Each is in the README's published-topics table and in what the node really creates.
    cams = yaml.safe_load((ROOT / "config" / "default.yaml").read_text())["/**"]["ros__parameters"]["cameras"]
    documented = set()
    for row in _readme_published_topics():
        for c in cams:
            documented.add(row.replace("<camera>", c))
    everything = {k: True for k in ("publish.depth", "publish.confidence", "publish.dynamic_mask",
                                    "publish.camera_clouds", "publish.fused_cloud", "publish.keypoints",
                                    "publish.keypoint_markers", "publish_odom_tf")}
    created = set(output_topics(dict(everything, cameras=cams), ns="~")) | {"~/map"}  # ~/map: with map.enable
    for suffix in private:
        assert f"~/{suffix}" in documented, f"~/{suffix} is not in README's published topics"
        assert f"~/{suffix}" in created, f"the node does not publish ~/{suffix}"
    assert {"map", "odometry", "points/fused", "cam0/depth", "cam0/dynamic_mask", "cam0/keypoints/markers"} <= private
    assert topics[f"{name}/map"]["Topic"]["Durability Policy"] == "Transient Local"  # ~/map is latched
    assert topics[f"{name}/cam0/keypoints/markers"]["Class"] == "rviz_default_plugins/MarkerArray"
    assert doc["Visualization Manager"]["Global Options"]["Fixed Frame"] == "odom"


# ------------------------------------------------------------------------------------------------
# scripts/ros_env.sh: one documented domain per machine, overridable, printed once
# ------------------------------------------------------------------------------------------------

def _source_ros_env(env, times=1):
    import subprocess

    script = "; ".join(["source scripts/ros_env.sh"] * times) + '; echo "domain=$ROS_DOMAIN_ID"'
    out = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1], out.stderr


def test_ros_env_uses_one_documented_domain_and_prints_it_once():
    import os

    base = {k: v for k, v in os.environ.items() if k not in ("ROS_DOMAIN_ID", "AMENT_PREFIX_PATH")}
    first, err1 = _source_ros_env(base, times=2)
    second, _ = _source_ros_env(base)
    assert first == second == "domain=5"  # two terminals following the README meet in the same domain
    shown = [line for line in err1.splitlines() if "ROS_DOMAIN_ID=" in line]
    assert shown == [shown[0]] and "ROS_DOMAIN_ID=5" in shown[0]  # once, even when sourced twice
    assert "ROS_DOMAIN_ID=5" in (ROOT / "README.md").read_text()  # and documented
    overridden, err = _source_ros_env(dict(base, ROS_DOMAIN_ID="17"))
    assert overridden == "domain=17" and "ROS_DOMAIN_ID=17" in err
    # The tests keep a domain of their own (test/conftest.py drops the shell's before rosenv draws one).
    assert os.environ["ROS_DOMAIN_ID"] != "5" or os.environ.get("VGGT4D_TEST_DOMAIN_FIXED")
