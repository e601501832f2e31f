"""``vggt4d-bag``: play, record and inspect rosbag2 bags with rclpy + rosbags (no ros2cli needed).

    vggt4d-bag play BAG [--rate R] [--clock] [--lock-step ...] [--topics ...] ...
    vggt4d-bag record -o OUT [TOPIC ...] [--types T ...] [--all] [--storage mcap|sqlite3] ...
    vggt4d-bag info BAG

Errors are one line on stderr (``vggt4d-bag: error: ...``) with exit status 1 (2 for bad usage);
a summary line goes to stdout when a command finishes. See docs/bag-tools.md.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from ..cli_util import strip_ros_args
from .io import BagError


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vggt4d-bag", description="Play, record and inspect rosbag2 bags.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("play", help="publish a bag into the ROS graph")
    p.add_argument("bag", help="bag directory, or a single .mcap/.db3 file")
    p.add_argument("-r", "--rate", type=float, default=1.0, help="speed factor; 0 = as fast as possible")
    p.add_argument("--start", type=float, default=0.0, help="seconds from the bag's first message")
    p.add_argument("--duration", type=float, default=None, help="seconds of bag to play")
    p.add_argument("--topics", nargs="+", default=None, help="bag topics to play (default all)")
    p.add_argument("--remap", nargs="+", default=[], metavar="FROM:=TO", help="rename topics")
    p.add_argument("--clock", action="store_true", help="publish /clock with bag time (use_sim_time)")
    p.add_argument("--clock-hz", type=float, default=100.0, help="/clock rate while waiting (default 100)")
    p.add_argument("-l", "--loop", type=int, default=1, help="passes over the bag; 0 = forever")
    p.add_argument("--best-effort", action="store_true", help="publish sensor topics best effort")
    p.add_argument("--qos-depth", type=int, default=100, help="keep-last depth of sensor publishers")
    p.add_argument("--latched", nargs="+", default=None, metavar="TOPIC",
                   help="topics to publish transient local (default: as recorded, and /tf_static)")
    p.add_argument("--wait-subscribers", action="store_true",
                   help="wait until every played topic has a subscriber before the first message")
    p.add_argument("--wait-topics", nargs="+", default=None, help="topics --wait-subscribers waits for")
    p.add_argument("--wait-timeout", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument("--lock-step", action="store_true",
                   help="publish one time step at a time, waiting for an ack on --lock-step-topic")
    p.add_argument("--lock-step-topic", default="/vggt4d/status", help="ack topic (default /vggt4d/status)")
    p.add_argument("--lock-step-type", default=None,
                   help="ack message type, e.g. vggt4d_ros/msg/WindowStatus (default: from the graph)")
    p.add_argument("--trigger-topics", nargs="+", default=None,
                   help="topics that define time steps (default: all Image/CompressedImage topics)")
    p.add_argument("--step-tolerance", type=float, default=0.005,
                   help="seconds within which trigger stamps form one step (default 0.005)")
    p.add_argument("--lock-step-timeout", type=float, default=5.0, help="seconds to wait per step (default 5)")
    p.add_argument("--skip-unknown", action="store_true", help="skip topics whose type is not importable")

    r = sub.add_parser("record", help="record topics of the ROS graph into a bag")
    r.add_argument("topics", nargs="*", help="topics to record")
    r.add_argument("-o", "--output", required=True,
                   help="output bag directory, or OUT.mcap / OUT.db3 for a single file (must not exist)")
    r.add_argument("--types", nargs="+", default=None, help="also record every topic of these types")
    r.add_argument("-a", "--all", action="store_true", help="record every topic discovered")
    r.add_argument("--exclude", nargs="+", default=[], help="topics never recorded")
    r.add_argument("-s", "--storage", default="mcap", help="mcap (default) or sqlite3")
    r.add_argument("--compression", choices=("zstd", "none"), default=None,
                   help="MCAP chunk compression (default zstd for mcap; sqlite3 has none)")
    r.add_argument("--qos", default="auto", help="auto (match publishers, default), best_effort, reliable")
    r.add_argument("--reliable", action="store_true", help="same as --qos reliable")
    r.add_argument("-d", "--duration", type=float, default=None, help="stop after this many seconds")
    r.add_argument("--max-messages", type=int, default=None, help="stop after this many messages")
    r.add_argument("--until-topic-idle", type=float, default=None, metavar="SECONDS",
                   help="stop when no message arrived for SECONDS (after the first one)")

    i = sub.add_parser("info", help="print the topics of a bag")
    i.add_argument("bag")
    return ap


def _err(text: str) -> None:
    print(f"vggt4d-bag: error: {' '.join(str(text).split())}", file=sys.stderr, flush=True)


def _play(args) -> int:
    from .play import play_bag

    result = play_bag(
        args.bag, rate=args.rate, start=args.start, duration=args.duration, topics=args.topics,
        remap=args.remap, clock=args.clock, clock_hz=args.clock_hz, loop=args.loop,
        best_effort=args.best_effort, qos_depth=args.qos_depth, latched_topics=args.latched,
        wait_subscribers=args.wait_subscribers, wait_topics=args.wait_topics, wait_timeout=args.wait_timeout,
        lock_step=args.lock_step, lock_step_topic=args.lock_step_topic, lock_step_type=args.lock_step_type,
        trigger_topics=args.trigger_topics, step_tolerance=args.step_tolerance,
        lock_step_timeout=args.lock_step_timeout, skip_unknown=args.skip_unknown, handle_signals=True,
    )
    print(f"vggt4d-bag play: {result.summary()}", flush=True)
    return 0


def _record(args) -> int:
    from .record import record

    qos = "reliable" if args.reliable else args.qos

    def ready(rec) -> None:
        print(f"vggt4d-bag record: recording to {args.output}", file=sys.stderr, flush=True)

    result = record(
        args.output, topics=args.topics, types=args.types, all_topics=args.all, exclude=args.exclude,
        storage=args.storage, compression=args.compression, qos=qos, duration=args.duration,
        max_messages=args.max_messages,
        until_topic_idle=args.until_topic_idle, handle_signals=True, on_ready=ready,
    )
    print(f"vggt4d-bag record: {result.summary()}", flush=True)
    return 0


def _info(args) -> int:
    from .io import bag_time_range, bag_topics

    topics = bag_topics(args.bag)
    t0, t1 = bag_time_range(args.bag)
    total = sum(t.count for t in topics.values())
    print(f"{args.bag}: {total} messages, {len(topics)} topics, {(t1 - t0) / 1e9:.3f} s")
    for name, t in sorted(topics.items()):
        print(f"  {name}  {t.msgtype}  {t.count}{'  (latched)' if t.latched else ''}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``vggt4d-bag`` console script; returns the exit status."""
    args = _parser().parse_args(strip_ros_args(argv))  # launch_ros appends --ros-args ...
    handlers = {"play": _play, "record": _record, "info": _info}
    try:
        return handlers[args.command](args)
    except BagError as exc:
        _err(exc)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
