"""Test session set-up: every ROS process started by the tests stays on this machine.

The localhost-only DDS environment (vggt4d_ros/rosenv.py) is applied at import time, before any test
imports rclpy, with a domain id of its own for this pytest run (children inherit it).
"""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
HELPERS = ROOT / "test" / "helpers"  # shared test code (node_harness); not a package: stdlib owns "test"
if str(HELPERS) not in sys.path:
    sys.path.insert(0, str(HELPERS))

from vggt4d_ros.rosenv import apply_localhost_env  # noqa: E402

if not os.environ.get("VGGT4D_TEST_DOMAIN_FIXED"):
    # A fresh domain per pytest run, so parallel runs (or a stray node) never see each other.
    os.environ.pop("ROS_DOMAIN_ID", None)
apply_localhost_env()
