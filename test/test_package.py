"""Package metadata and install layout, parsed with the real parsers."""
import ast
import importlib
import re
from pathlib import Path

import pytest
from catkin_pkg.package import parse_package

ROOT = Path(__file__).resolve().parents[1]


def _entry_points():
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            value = ast.literal_eval(node.value)
            return dict(s.replace(" ", "").split("=", 1) for s in value["console_scripts"])
    raise AssertionError("setup.py declares no entry_points")


def test_package_xml_is_valid_format3():
    pkg = parse_package(str(ROOT / "package.xml"))  # validates (raises InvalidPackage)
    assert pkg.name == "vggt4d_ros"
    assert pkg.package_format == 3
    assert pkg.get_build_type() == "ament_cmake"
    names = {d.name for d in pkg.buildtool_depends}
    assert {"ament_cmake", "ament_cmake_python", "rosidl_default_generators"} <= names
    assert "rosidl_interface_packages" in {g.name for g in pkg.member_of_groups}
    exec_deps = {d.name for d in pkg.exec_depends}
    assert {"rclpy", "sensor_msgs", "nav_msgs", "tf2_msgs"} <= exec_deps


def test_versions_agree():
    pkg = parse_package(str(ROOT / "package.xml"))
    setup_version = re.search(r'version="([^"]+)"', (ROOT / "setup.py").read_text()).group(1)
    import vggt4d_ros

    assert pkg.version == setup_version == vggt4d_ros.__version__


def test_cmake_lists_every_message_and_executable():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    msgs = sorted(p.name for p in (ROOT / "msg").glob("*.msg"))
    assert msgs, "no messages"
    for m in msgs:
        assert f'"msg/{m}"' in cmake, f"{m} not in rosidl_generate_interfaces"
    for exe in re.findall(r"scripts/(vggt4d_\w+)", cmake):
        path = ROOT / "scripts" / exe
        assert path.is_file() and path.stat().st_mode & 0o111, f"{path} missing or not executable"
        target = re.search(r"from ([\w.]+) import main", path.read_text()).group(1)
        console = exe.replace("_", "-")
        assert _entry_points()[console] == f"{target}:main", f"{exe} and console script {console} disagree"


@pytest.mark.parametrize("script", sorted(_entry_points()))
def test_console_scripts_resolve(script):
    module, func = _entry_points()[script].split(":")
    mod = importlib.import_module(module)
    assert callable(getattr(mod, func)), f"{script} -> {module}:{func} is not callable"


def test_core_imports_without_rclpy():
    import subprocess
    import sys

    code = (
        "import sys, importlib\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'rclpy' or name.startswith('rclpy.'):\n"
        "            raise ImportError('rclpy blocked for this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "for m in ['vggt4d_ros.model', 'vggt4d_ros.geometry', 'vggt4d_ros.inference', 'vggt4d_ros.data',\n"
        "          'vggt4d_ros.window']:\n"
        "    importlib.import_module(m)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_readme_starts_with_the_two_commands_and_documents_every_parameter():
    from vggt4d_ros.ros.params import CAMERA_PARAMS, NODE_PARAMS

    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    cmds = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert cmds == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    for p in NODE_PARAMS:
        assert f"`{p.name}`" in text, f"README does not document parameter {p.name}"
    for p in CAMERA_PARAMS:
        assert f"`<camera>.{p.name}`" in text, f"README does not document parameter <camera>.{p.name}"


def test_readme_parameter_table_is_generated_from_params():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_param_table.py")], capture_output=True,
                         text=True, check=True).stdout.strip()
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- params:begin -->")[1].split("<!-- params:end -->")[0].strip()
    assert block == out, "README's parameter table is stale: run scripts/gen_param_table.py --write"
