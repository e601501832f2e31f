#!/usr/bin/env bash
# Run the test suite: sets up .venv when needed (scripts/setup.sh), then pytest.
# Every ROS process the tests start keeps DDS on this machine (test/conftest.py, vggt4d_ros/rosenv.py).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
# shellcheck disable=SC1091
source "$ROOT/scripts/ros_env.sh"
exec "$ROOT/.venv/bin/python" -m pytest -q -p no:cacheprovider "$@" test
