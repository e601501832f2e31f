"""Keep every ROS 2 process this project starts on this machine.

Tests, the demo and the benchmarks call :func:`apply_localhost_env` (in-process, before ``rclpy.init``)
or pass :func:`localhost_env` to ``subprocess`` so that DDS discovery and data stay on shared memory
and 127.0.0.1: ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``, the project's own Fast DDS profile, a
per-run ``ROS_DOMAIN_ID`` and a temporary ``ROS_LOG_DIR``. No ROS import here.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Mapping, MutableMapping, Optional

FASTDDS_PROFILE = Path(__file__).resolve().parent / "resources" / "fastdds-localhost.xml"

# Domain ids 0..101 are valid for Fast DDS with default ports; keep clear of 0 (the default).
_DOMAIN_RANGE = (10, 99)


def localhost_env(
    base: Optional[Mapping[str, str]] = None,
    domain_id: Optional[int] = None,
    log_dir: Optional[str] = None,
) -> dict:
    """Return a copy of ``base`` (default ``os.environ``) with the localhost-only DDS settings.

    An existing ``ROS_DOMAIN_ID`` / ``ROS_LOG_DIR`` in ``base`` is kept unless overridden, so a
    parent process and the children it starts share one domain.
    """
    env = dict(os.environ if base is None else base)
    _fill(env, domain_id, log_dir)
    return env


def apply_localhost_env(domain_id: Optional[int] = None, log_dir: Optional[str] = None) -> dict:
    """Set the localhost-only DDS settings in ``os.environ`` (call before ``rclpy.init``)."""
    _fill(os.environ, domain_id, log_dir)
    return {k: os.environ[k] for k in _KEYS}


_KEYS = (
    "ROS_AUTOMATIC_DISCOVERY_RANGE",
    "FASTDDS_DEFAULT_PROFILES_FILE",
    "ROS_DOMAIN_ID",
    "ROS_LOG_DIR",
    "RMW_IMPLEMENTATION",
)


def _fill(env: MutableMapping[str, str], domain_id: Optional[int], log_dir: Optional[str]) -> None:
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.pop("ROS_STATIC_PEERS", None)
    env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated in Jazzy; the range above replaces it
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(FASTDDS_PROFILE)
    env["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(int(domain_id))
    elif not env.get("ROS_DOMAIN_ID"):
        env["ROS_DOMAIN_ID"] = str(random.randint(*_DOMAIN_RANGE))
    if log_dir is not None:
        env["ROS_LOG_DIR"] = log_dir
    elif not env.get("ROS_LOG_DIR"):
        env["ROS_LOG_DIR"] = tempfile.mkdtemp(prefix="vggt4d-roslog-")
