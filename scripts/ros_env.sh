# Source this before starting any ROS 2 process of this project by hand:
#   source scripts/ros_env.sh
# Keeps DDS discovery and data on this machine (shared memory + 127.0.0.1) and activates .venv.
#
# Every shell that sources it joins ONE ROS domain, so processes started in two terminals see each other:
# ROS_DOMAIN_ID from the environment when it is set (e.g. `ROS_DOMAIN_ID=12 source scripts/ros_env.sh`),
# else the project's default, 5 (outside 10..99, the range the tests draw their per-run domains from:
# vggt4d_ros/rosenv.py, test/conftest.py). The domain is printed once per shell, on stderr.
_vggt4d_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export FASTDDS_DEFAULT_PROFILES_FILE="$_vggt4d_root/vggt4d_ros/resources/fastdds-localhost.xml"
export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-5}"
export ROS_LOG_DIR="${ROS_LOG_DIR:-$(mktemp -d -t vggt4d-roslog.XXXXXX)}"
unset ROS_LOCALHOST_ONLY ROS_STATIC_PEERS
if [ -f "$_vggt4d_root/.venv/bin/activate" ] && [ -z "${AMENT_PREFIX_PATH:-}" ]; then
  # shellcheck disable=SC1091
  . "$_vggt4d_root/.venv/bin/activate"
  export AMENT_PREFIX_PATH="$VIRTUAL_ENV"
fi
if [ "${_VGGT4D_DOMAIN_SHOWN:-}" != "$ROS_DOMAIN_ID" ]; then
  echo "vggt4d ros_env: ROS_DOMAIN_ID=$ROS_DOMAIN_ID (localhost only; override: ROS_DOMAIN_ID=N source scripts/ros_env.sh)" >&2
  _VGGT4D_DOMAIN_SHOWN="$ROS_DOMAIN_ID"
fi
unset _vggt4d_root
