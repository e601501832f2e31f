"""Command-line helpers shared by every ``vggt4d-*`` executable; no ROS import at module level.

launch_ros starts every executable as ``EXE ARGS... --ros-args -r __node:=NAME [-r __ns:=NS]
[--params-file FILE ...] [-r FROM:=TO ...]``, so each CLI, ROS or not, must drop those arguments before
its own ``argparse`` sees them: :func:`strip_ros_args` does that, with rclpy's own parser
(``rclpy.utilities.remove_ros_args``, i.e. rcl's) whenever rclpy is importable.
"""
from __future__ import annotations

import sys
from typing import List, Optional, Sequence

ROS_ARGS_FLAG = "--ros-args"


def strip_ros_args(argv: Optional[Sequence[str]] = None) -> List[str]:
    """Return ``argv`` (default ``sys.argv[1:]``, without the program name) less its ROS arguments.

    Without ``--ros-args`` in ``argv`` nothing is imported and ``argv`` comes back as a list. Otherwise
    rcl parses the ROS arguments (``rclpy.utilities.remove_ros_args``): they are checked as rcl checks
    them (an unknown ROS flag, a malformed remapping or an unreadable ``--params-file`` exit with status
    2 and one line), and what is left are the executable's own arguments.

    Fallback when rclpy cannot be imported (the ROS-free tools on a machine without ROS): every
    ``--ros-args`` section is dropped up to the next ``--`` (consumed too) or the end, which is how rcl
    delimits them; the ROS arguments themselves are then not checked.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if ROS_ARGS_FLAG not in args:
        return args
    try:
        from rclpy.utilities import remove_ros_args
    except ImportError:
        return _drop_ros_sections(args)
    try:
        return list(remove_ros_args(["_"] + args))[1:]
    except Exception as exc:  # noqa: BLE001 - rclpy's RCLInvalidROSArgsError / UnknownROSArgsError
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if type(exc).__name__ == "UnknownROSArgsError":
            reason = "unknown ROS argument(s) " + reason
        print(f"{_prog()}: error: invalid ROS arguments: {reason}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _drop_ros_sections(args: List[str]) -> List[str]:
    out: List[str] = []
    inside = False
    for a in args:
        if a == ROS_ARGS_FLAG:
            inside = True
        elif inside:
            inside = a != "--"
        else:
            out.append(a)
    return out


def _prog() -> str:
    import os

    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "vggt4d"
