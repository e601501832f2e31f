#!/usr/bin/env python3
"""Build ROS 2 interface packages with the PyPI wheels' rosidl, straight into a virtual environment.

Used by scripts/setup.sh on machines without a ROS install (see docs in README, "Environment"):
  1. rewrite the wheels' exported CMake files, which name the wheel-build container's Python include
     dirs (/opt/python/cp3XX-...), to this interpreter's include dirs;
  2. build tf2_msgs (TFMessage only; not published on PyPI) when it is not importable;
  3. build this package's messages (CMakeLists.txt with VGGT4D_INTERFACES_ONLY=ON).
Plain cmake, no colcon. Run with the venv's python.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TF2_MSGS_PACKAGE_XML = textwrap.dedent("""\
    <?xml version="1.0"?>
    <package format="3">
      <name>tf2_msgs</name>
      <version>0.36.0</version>
      <description>tf2_msgs/TFMessage, built locally because tf2_msgs is not published as a wheel.</description>
      <maintainer email="setup@example.com">vggt4d_ros setup</maintainer>
      <license>BSD-3-Clause</license>
      <buildtool_depend>ament_cmake</buildtool_depend>
      <buildtool_depend>rosidl_default_generators</buildtool_depend>
      <depend>geometry_msgs</depend>
      <exec_depend>rosidl_default_runtime</exec_depend>
      <member_of_group>rosidl_interface_packages</member_of_group>
      <export><build_type>ament_cmake</build_type></export>
    </package>
    """)
TF2_MSGS_CMAKE = textwrap.dedent("""\
    cmake_minimum_required(VERSION 3.16)
    project(tf2_msgs)
    find_package(ament_cmake REQUIRED)
    find_package(rosidl_default_generators REQUIRED)
    find_package(geometry_msgs REQUIRED)
    rosidl_generate_interfaces(${PROJECT_NAME} "msg/TFMessage.msg" DEPENDENCIES geometry_msgs)
    ament_export_dependencies(rosidl_default_runtime)
    ament_package()
    """)
# The official definition (one field); generated from this text its type hash equals the official one.
TF2_MSGS_TFMESSAGE = "geometry_msgs/TransformStamped[] transforms\n"


def patch_exported_cmake(venv: Path) -> int:
    """Point the wheels' exported include dirs at this interpreter; returns the number of files changed."""
    import numpy

    py_inc = sysconfig.get_paths()["include"]
    np_inc = numpy.get_include()
    pat_np = re.compile(r"/opt/python/cp3\d+-cp3\d+t?/lib/python3\.\d+t?/site-packages/numpy/_core/include")
    pat_py = re.compile(r"/opt/python/cp3\d+-cp3\d+t?/include/python3\.\d+t?")
    changed = 0
    for f in sorted((venv / "share").glob("*/cmake/*.cmake")):
        text = f.read_text(errors="replace")
        if "/opt/python/" not in text:
            continue
        new = pat_py.sub(py_inc, pat_np.sub(np_inc, text))
        if new != text:
            f.write_text(new)
            changed += 1
    return changed


def cmake_build(src: Path, build: Path, venv: Path, extra: list[str]) -> None:
    env = dict(os.environ)
    env["AMENT_PREFIX_PATH"] = str(venv)
    env["CMAKE_PREFIX_PATH"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    py = str(venv / "bin" / "python")
    build.mkdir(parents=True, exist_ok=True)
    configure = [
        "cmake", "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
        f"-DCMAKE_INSTALL_PREFIX={venv}", "-DBUILD_TESTING=OFF",
        f"-DPython3_EXECUTABLE={py}", f"-DPYTHON_EXECUTABLE={py}", *extra,
    ]
    jobs = str(max(1, min(4, os.cpu_count() or 1)))
    for cmd in (configure, ["cmake", "--build", str(build), "-j", jobs], ["cmake", "--install", str(build)]):
        res = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if res.returncode != 0:
            sys.stderr.write(res.stdout[-6000:])
            raise SystemExit(f"build_interfaces: `{' '.join(cmd[:3])}` failed for {src.name} (exit {res.returncode})")


def importable(module: str) -> bool:
    res = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True)
    return res.returncode == 0


def site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", type=Path, default=Path(sys.prefix))
    ap.add_argument("--build-dir", type=Path, default=ROOT / "build" / "setup")
    args = ap.parse_args(argv)
    venv = args.venv.resolve()

    n = patch_exported_cmake(venv)
    if n:
        print(f"[build_interfaces] rewrote Python include dirs in {n} exported CMake files", file=sys.stderr)

    if not importable("tf2_msgs.msg"):
        src = args.build_dir / "tf2_msgs_src"
        if src.exists():
            shutil.rmtree(src)
        (src / "msg").mkdir(parents=True)
        (src / "package.xml").write_text(TF2_MSGS_PACKAGE_XML)
        (src / "CMakeLists.txt").write_text(TF2_MSGS_CMAKE)
        (src / "msg" / "TFMessage.msg").write_text(TF2_MSGS_TFMESSAGE)
        print("[build_interfaces] building tf2_msgs", file=sys.stderr)
        cmake_build(src, args.build_dir / "tf2_msgs", venv, [])

    print("[build_interfaces] building vggt4d_ros messages", file=sys.stderr)
    cmake_build(ROOT, args.build_dir / "vggt4d_ros", venv, ["-DVGGT4D_INTERFACES_ONLY=ON"])
    # rosidl may install an (empty) vggt4d_ros/__init__.py into site-packages; without it that directory is
    # a namespace portion and the source package (found later on sys.path) stays the regular package, whose
    # __init__ merges both directories (pkgutil.extend_path).
    generated_init = site_packages(venv) / "vggt4d_ros" / "__init__.py"
    if generated_init.exists():
        generated_init.unlink()
    # ament_python_install_package also writes an egg-info naming the generated files; pip would take it for
    # an installed vggt4d_ros distribution and delete the generated messages when installing the sources.
    for egg in site_packages(venv).glob("vggt4d_ros-*.egg-info"):
        shutil.rmtree(egg) if egg.is_dir() else egg.unlink()
    if not importable("tf2_msgs.msg"):
        raise SystemExit("build_interfaces: tf2_msgs.msg is still not importable after the build")
    return 0


if __name__ == "__main__":
    sys.exit(main())
