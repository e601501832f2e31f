"""pip install of vggt4d_ros (the Python code and console scripts).

On a machine without ROS, scripts/setup.sh builds the messages with rosidl into .venv and then installs
this package with `pip install -e . --config-settings editable_mode=compat`. In a colcon workspace the
package is built by CMakeLists.txt (ament_cmake + ament_cmake_python) and this file is not used.
"""
from setuptools import find_packages, setup

setup(
    name="vggt4d_ros",
    version="0.1.0",
    description="4D visual-geometry transformer (VGGT / 4D-VGGT / PAGE-4D) as a ROS 2 perception node",
    packages=find_packages(include=["vggt4d_ros", "vggt4d_ros.*"]),
    package_data={"vggt4d_ros": ["resources/*"]},
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "vggt4d-node = vggt4d_ros.ros.node:main",
            "vggt4d-synth = vggt4d_ros.tools.synth_cli:main",
            "vggt4d-bag = vggt4d_ros.bag.cli:main",
            "vggt4d-replay = vggt4d_ros.tools.replay:main",
            "vggt4d-train = vggt4d_ros.tools.train:main",
            "vggt4d-export = vggt4d_ros.tools.export:main",
            "vggt4d-soak = vggt4d_ros.tools.soak:main",
        ]
    },
)
