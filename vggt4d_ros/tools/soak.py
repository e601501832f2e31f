"""``vggt4d-soak``: run the node for a long time on a looping bag and watch for leaks and bad outputs.

    vggt4d-soak [--duration S] [--out results.json] [--plot results.png] [--params-file config/tiny.yaml]
                [-p NAME:=VALUE ...] [--bag DIR] [--rate F] [--sample-period S]
                [--rss-slope-mib-per-min X] [--max-odom-step M]

What it does:

1. renders a short synthetic bag (:mod:`vggt4d_ros.data`; or plays ``--bag``) and starts
   ``vggt4d-node --ros-args --params-file FILE`` as a subprocess, DDS kept on this machine
   (:func:`vggt4d_ros.rosenv.localhost_env`);
2. plays the bag's camera topics with :func:`vggt4d_ros.bag.play.play_bag` (``loop=0``: forever, at
   ``--rate`` times real time; stamps restart at every pass, so the node sees a bag loop each time);
3. subscribes (reliable) to every output of the node and checks each decoded message with
   :class:`vggt4d_ros.eval.integrity.IntegrityChecker` (well-formed, stamps monotonic per topic except
   where a loop restarts them, odometry without jumps);
4. samples every ``--sample-period`` seconds: the node's resident memory and thread count
   (``/proc/<pid>/status`` VmRSS and Threads), its GPU memory (``nvidia-smi``, when there is one),
   the node's own counters from ``/diagnostics`` (steps in, windows, skipped, dropped frames, resets,
   errors, per-camera drops and rejections), and the output rate (odometry messages per second);
5. writes JSON (``--out``) and a plot (``--plot``) and a verdict: ``flat`` (least-squares slope of RSS
   over the second half below ``--rss-slope-mib-per-min``), ``no_thread_growth`` (the second half never
   has more threads than the first), ``integrity`` (every message passed), ``alive`` (the node ran to
   the end and exited cleanly on SIGINT) and ``outputs_continue`` (outputs in the last quarter).

Exit status: 0 when every verdict holds, 1 when one fails, 2 for bad arguments or when the soak could
not run (node died at start, no bag).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ..cli_util import strip_ros_args

__all__ = ["main", "build_parser", "run_soak", "proc_status", "gpu_memory_mib", "verdict", "machine_label"]

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PARAMS = ROOT / "config" / "tiny.yaml"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"vggt4d-soak: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vggt4d-soak", description="Soak test: the node on a looping synthetic bag over real DDS; "
                "memory, threads, queues, output rate and output integrity over time.")
    p.add_argument("--duration", type=float, default=600.0, help="seconds of playback (default 600)")
    p.add_argument("--out", type=Path, default=Path("soak.json"), help="JSON result (default soak.json)")
    p.add_argument("--plot", type=Path, default=None, help="PNG plot (default: --out with .png)")
    p.add_argument("--no-plot", action="store_true", help="write no plot")
    p.add_argument("--params-file", type=Path, default=DEFAULT_PARAMS, help="node parameters (default config/tiny.yaml)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="extra node parameter (repeatable), passed as --ros-args -p")
    p.add_argument("--bag", type=Path, default=None, help="play this bag instead of a synthetic one")
    p.add_argument("--cameras", type=int, default=2, help="synthetic bag: cameras (default 2)")
    p.add_argument("--width", type=int, default=252, help="synthetic bag: width (default 252)")
    p.add_argument("--height", type=int, default=140, help="synthetic bag: height (default 140)")
    p.add_argument("--bag-rate", type=float, default=10.0, help="synthetic bag: frame rate Hz (default 10)")
    p.add_argument("--bag-duration", type=float, default=4.0, help="synthetic bag: seconds per loop (default 4)")
    p.add_argument("--seed", type=int, default=0, help="synthetic bag: seed")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1 = real time)")
    p.add_argument("--sample-period", type=float, default=1.0, help="seconds between samples (default 1)")
    p.add_argument("--rss-slope-mib-per-min", type=float, default=2.0,
                   help="'flat' when the RSS slope over the second half is below this (default 2 MiB/min)")
    p.add_argument("--max-odom-step", type=float, default=1.0,
                   help="largest accepted position step between consecutive odometry messages, m (default 1)")
    p.add_argument("--startup-timeout", type=float, default=180.0, help="seconds for the node to come up")
    p.add_argument("--machine", default=None, help="machine label in the JSON (default from /proc/cpuinfo)")
    p.add_argument("--keep", type=Path, default=None, help="keep the node log (and synthetic bag) in this directory")
    p.add_argument("--note", default="", help="free text stored in the JSON (what was run, on which commit)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


# ---------------------------------------------------------------------- measurements
def proc_status(pid: int) -> Optional[Dict[str, int]]:
    """``{'rss_kib', 'threads'}`` of a live process from ``/proc/<pid>/status``; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    out: Dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            out["rss_kib"] = int(line.split()[1])
        elif line.startswith("Threads:"):
            out["threads"] = int(line.split()[1])
    return out if "rss_kib" in out else None


def gpu_memory_mib(pid: int) -> Optional[float]:
    """GPU memory used by ``pid`` per ``nvidia-smi`` (MiB); None without nvidia-smi or a GPU context."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        res = subprocess.run([exe, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    total, seen = 0.0, False
    for line in res.stdout.splitlines():
        parts = [s.strip() for s in line.split(",")]
        if len(parts) == 2 and parts[0] == str(pid):
            try:
                total += float(parts[1])
                seen = True
            except ValueError:
                pass
    return total if seen else None


def machine_label() -> str:
    """e.g. ``amd-epyc-2c`` from the CPU model name and the core count."""
    name = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1]
                break
    except OSError:
        pass
    words = [w for w in "".join(c if c.isalnum() else " " for c in name.lower()).split()
             if w not in ("cpu", "processor", "core", "tm", "r")][:2]
    return "-".join(words or ["cpu"]) + f"-{os.cpu_count()}c"


def _slope_per_min(t_s: np.ndarray, y: np.ndarray) -> float:
    if len(t_s) < 3 or np.ptp(t_s) <= 0:
        return float("nan")
    return float(np.polyfit(t_s / 60.0, y, 1)[0])


def verdict(samples: List[Dict[str, Any]], integrity_ok: bool, alive: bool, clean_exit: bool,
            rss_slope_threshold: float) -> Dict[str, Any]:
    """Verdicts from the time series (see the module docstring)."""
    t = np.array([s["t_s"] for s in samples], dtype=np.float64)
    rss = np.array([s["rss_mib"] for s in samples], dtype=np.float64)
    thr = np.array([s["threads"] for s in samples], dtype=np.float64)
    out: Dict[str, Any] = {}
    if len(t) < 6:
        return {"flat": False, "no_thread_growth": False, "integrity": integrity_ok, "alive": alive,
                "clean_exit": clean_exit, "outputs_continue": False, "pass": False,
                "reason": f"only {len(t)} samples"}
    half = t >= t[0] + (t[-1] - t[0]) / 2
    slope = _slope_per_min(t[half], rss[half])
    out["rss_slope_second_half_mib_per_min"] = slope
    out["rss_slope_threshold_mib_per_min"] = rss_slope_threshold
    out["flat"] = bool(np.isfinite(slope) and slope < rss_slope_threshold)
    out["threads_first_half_max"] = int(thr[~half].max())
    out["threads_second_half_max"] = int(thr[half].max())
    out["no_thread_growth"] = bool(thr[half].max() <= thr[~half].max())
    out["integrity"] = bool(integrity_ok)
    out["alive"] = bool(alive)
    out["clean_exit"] = bool(clean_exit)
    last_q = t >= t[0] + 0.75 * (t[-1] - t[0])
    odo = np.array([s["outputs"].get("odometry", 0) for s in samples])
    out["outputs_continue"] = bool(odo[last_q].max() > odo[~last_q].max())
    out["pass"] = all(out[k] for k in ("flat", "no_thread_growth", "integrity", "alive", "clean_exit",
                                       "outputs_continue"))
    return out


# ---------------------------------------------------------------------- parameters
def effective_params(params_file: Path, overrides: List[str]) -> Dict[str, Any]:
    """The node's parameters: table defaults, then the YAML file (read and validated as the replay reads
    it), then ``NAME:=VALUE`` overrides (YAML values, as ``--ros-args -p`` takes them)."""
    import yaml

    from vggt4d_ros.eval.config import load_params

    params = load_params(params_file)
    for item in overrides:
        if ":=" not in item:
            raise ValueError(f"bad parameter {item!r} (expected NAME:=VALUE)")
        k, v = item.split(":=", 1)
        params[k] = yaml.safe_load(v)
    return params


NODE_NAMESPACE = "/vggt4d"


def output_topics(params: Dict[str, Any], ns: str = NODE_NAMESPACE) -> Dict[str, str]:
    """``{topic: type}`` the node publishes with these parameters (docs: README, node topics)."""
    t = {f"{ns}/odometry": "nav_msgs/msg/Odometry", f"{ns}/status": "vggt4d_ros/msg/WindowStatus",
         "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray"}
    if params.get("publish_odom_tf", True):
        t["/tf"] = "tf2_msgs/msg/TFMessage"
    if params.get("publish.fused_cloud", True):
        t[f"{ns}/points/fused"] = "sensor_msgs/msg/PointCloud2"
    for c in params["cameras"]:
        p = f"{ns}/{c}"
        if params.get("publish.depth", True):
            t[f"{p}/depth"] = "sensor_msgs/msg/Image"
            t[f"{p}/depth/camera_info"] = "sensor_msgs/msg/CameraInfo"
        if params.get("publish.confidence", False):
            t[f"{p}/depth/confidence"] = "sensor_msgs/msg/Image"
        if params.get("publish.dynamic_mask", True):
            t[f"{p}/dynamic_mask"] = "sensor_msgs/msg/Image"
            t[f"{p}/dynamic_mask/camera_info"] = "sensor_msgs/msg/CameraInfo"
        if params.get("publish.camera_clouds", True):
            t[f"{p}/points"] = "sensor_msgs/msg/PointCloud2"
        if params.get("publish.keypoints", True) and int(params.get("keypoints.max_count", 64)) > 0:
            t[f"{p}/keypoints"] = "vggt4d_ros/msg/TrackedKeypoints"
    return t


# ---------------------------------------------------------------------- the run
def _diag_numbers(values: Dict[str, str]) -> Dict[str, float]:
    out = {}
    for k, v in values.items():
        try:
            out[k] = float(v)
        except ValueError:
            pass
    return out


def run_soak(args: argparse.Namespace, log=print) -> Dict[str, Any]:
    """Run the soak described by parsed ``args``; returns the JSON-ready result (see the module docstring)."""
    import rclpy
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions

    from vggt4d_ros.bag.io import bag_topics, header_stamp_ns, read_messages
    from vggt4d_ros.bag.play import play_bag
    from vggt4d_ros.bag.rosutil import BackgroundSpinner, message_class, stop_process
    from vggt4d_ros.eval.integrity import IntegrityChecker
    from vggt4d_ros.eval.through_ros import node_command
    from vggt4d_ros.rosenv import apply_localhost_env, localhost_env

    params = effective_params(args.params_file, args.param)
    cams = [str(c) for c in params["cameras"]]
    work = Path(tempfile.mkdtemp(prefix="vggt4d-soak-"))
    keep = args.keep
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    commit = _git_commit()  # the code the node starts from (the tree may move on during a long run)
    try:
        # ---------------------------------------------------------------- input bag
        if args.bag is not None:
            bag = args.bag
        else:
            from vggt4d_ros.data.bagwriter import write_synth_bag
            from vggt4d_ros.data.synth import SynthConfig, SynthSequence

            if args.cameras != len(cams):
                raise ValueError(f"--cameras {args.cameras} but the node has cameras {cams}")
            bag = (keep or work) / "soak-input"
            if bag.exists():
                shutil.rmtree(bag)
            write_synth_bag(SynthSequence(SynthConfig(
                seed=args.seed, num_cameras=args.cameras, width=args.width, height=args.height,
                rate_hz=args.bag_rate, duration_s=args.bag_duration, num_tracks=64)), bag, ground_truth=False)
        topics_in = bag_topics(bag)
        img_topics = [f"/{c}/image_raw" for c in cams]
        info_topics = [f"/{c}/camera_info" for c in cams]
        missing = [t for t in img_topics + info_topics if t not in topics_in]
        if missing:
            raise ValueError(f"bag {bag} lacks {missing}")
        stamps = [header_stamp_ns(raw, mt) for _t, mt, _l, raw in read_messages(bag, [img_topics[0]])]
        loop_start, loop_end = min(stamps), max(stamps)
        bag_span_s = (loop_end - loop_start) * 1e-9
        play_topics = img_topics + info_topics + (["/tf_static"] if "/tf_static" in topics_in else [])

        # ---------------------------------------------------------------- monitor
        apply_localhost_env()
        env = localhost_env()
        lock = threading.Lock()
        ctx = rclpy.context.Context()
        rclpy.init(context=ctx, signal_handler_options=SignalHandlerOptions.NO)
        mon = rclpy.create_node("vggt4d_soak_monitor", context=ctx)
        t_zero = [time.monotonic()]
        # Input restarts as seen on the wire: the monitor watches camera 0's stamps (raw, never decoded).
        input_state = {"last": None, "restarts": 0}

        def on_input(raw: bytes) -> None:
            st = header_stamp_ns(raw, "sensor_msgs/msg/Image")
            with lock:
                if st is not None and input_state["last"] is not None and st < input_state["last"]:
                    input_state["restarts"] += 1
                input_state["last"] = st

        checker = IntegrityChecker(max_odom_step_m=args.max_odom_step, loop_start_ns=loop_start,
                                   loop_end_ns=loop_end, loops=lambda: input_state["restarts"],
                                   clock=lambda: time.monotonic() - t_zero[0])
        processed_windows: set = set()
        expected = output_topics(params)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE)

        def on_msg(topic: str, msgtype: str, msg: Any, info: Any = None) -> None:
            seq = None
            if isinstance(info, dict):  # rclpy's MessageInfo (Iron and later); Humble passes no info
                seq = info.get("publication_sequence_number")
            with lock:
                checker.check(topic, msgtype, msg, seq=seq)
                if msgtype == "vggt4d_ros/msg/WindowStatus" and msg.num_time_steps > 0:
                    processed_windows.add(int(msg.window_index))

        for topic, msgtype in sorted(expected.items()):
            mon.create_subscription(message_class(msgtype), topic, _monitor_callback(on_msg, topic, msgtype), qos)
        mon.create_subscription(message_class("sensor_msgs/msg/Image"), img_topics[0], on_input,
                                QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                                           reliability=ReliabilityPolicy.RELIABLE), raw=True)
        spinner = BackgroundSpinner(mon, name="soak-monitor", join_timeout=5.0)

        # ---------------------------------------------------------------- node
        cmd = node_command(args.params_file)
        for item in args.param:
            cmd += ["-p", item]
        node_log = (keep or work) / "node.log"
        logf = open(node_log, "wb")
        proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        log(f"node pid {proc.pid} (ROS_DOMAIN_ID {env.get('ROS_DOMAIN_ID')}): {' '.join(cmd)}")
        player_node = rclpy.create_node("vggt4d_soak_player", context=ctx)
        stop = threading.Event()
        play_box: Dict[str, Any] = {}

        def player() -> None:
            try:
                play_box["result"] = play_bag(
                    bag, rate=args.rate, loop=0, topics=play_topics, wait_subscribers=True, wait_topics=img_topics,
                    wait_timeout=args.startup_timeout, node=player_node, stop_event=stop,
                    log=lambda s: log(f"[play] {s}"))
            except Exception as exc:  # noqa: BLE001 - reported in the result
                play_box["error"] = repr(exc)

        samples: List[Dict[str, Any]] = []
        alive = True
        t_start = time.monotonic()
        play_thread = None
        try:
            # Wait until the node publishes its outputs (configured) before starting the clock.
            deadline = time.monotonic() + args.startup_timeout
            while mon.count_publishers(f"{NODE_NAMESPACE}/odometry") < 1:
                if proc.poll() is not None:
                    raise RuntimeError(f"the node exited with code {proc.returncode} at start: "
                                       f"{node_log.read_text(errors='replace')[-1500:]}")
                if "configure failed" in node_log.read_text(errors="replace"):
                    raise RuntimeError(f"the node failed to configure: {_tail(node_log)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the node did not come up within {args.startup_timeout:g} s: {_tail(node_log)}")
                time.sleep(0.1)
            play_thread = threading.Thread(target=player, name="soak-player", daemon=True)
            play_thread.start()
            t_start = time.monotonic()
            t_zero[0] = t_start
            next_t = t_start
            prev_odo, prev_t = 0, t_start
            while True:
                now = time.monotonic()
                if now - t_start >= args.duration:
                    break
                if proc.poll() is not None:
                    alive = False
                    log(f"the node exited with code {proc.returncode} during the soak")
                    break
                if now < next_t:
                    time.sleep(min(0.1, next_t - now))
                    continue
                next_t += args.sample_period
                ps = proc_status(proc.pid)
                if ps is None:
                    continue
                gpu = gpu_memory_mib(proc.pid)
                with lock:
                    counts = dict(checker.report.messages)
                    diag = {k: _diag_numbers(v) for k, v in checker.last_diagnostics.items()}
                    n_proc = len(processed_windows)
                tracking = next((v for k, v in diag.items() if k.endswith(": tracking")), {})
                cam_diag = {k.rsplit("camera ", 1)[-1]: v for k, v in diag.items() if ": camera " in k}
                odo = counts.get(f"{NODE_NAMESPACE}/odometry", 0)
                s = {
                    "t_s": round(now - t_start, 3), "rss_mib": ps["rss_kib"] / 1024.0, "threads": ps["threads"],
                    "gpu_mib": gpu,
                    "outputs": {"odometry": odo, "total": sum(counts.values())},
                    "output_rate_hz": (odo - prev_odo) / max(1e-6, now - prev_t),
                    "node": {k: tracking.get(k) for k in ("steps_in", "windows", "windows_skipped", "frames_dropped",
                                                          "resets", "errors", "latency_median_s", "latency_max_s")},
                    "windows_processed": (None if not tracking else tracking.get("windows", 0)
                                          - tracking.get("windows_skipped", 0) - tracking.get("errors", 0)),
                    "windows_with_output": n_proc,
                    # Queue lengths, when the node's diagnostics carry them (keys naming a queue or pending).
                    "queues": {f"{name}/{k}": v for name, vals in diag.items() for k, v in vals.items()
                               if "pending" in k or "queue" in k},
                    "cameras": {c: {k: v.get(k) for k in ("received", "rate_hz", "dropped_overflow",
                                                          "dropped_unmatched", "dropped_late", "rejected")}
                                for c, v in cam_diag.items()},
                }
                prev_odo, prev_t = odo, now
                samples.append(s)
                if not args.quiet and len(samples) % max(1, int(round(30 / args.sample_period))) == 0:
                    log(f"t={s['t_s']:.0f}s rss={s['rss_mib']:.1f}MiB threads={s['threads']} "
                        f"odom={odo} rate={s['output_rate_hz']:.2f}Hz resets={s['node'].get('resets')}")
        finally:
            stop.set()
            if play_thread is not None:
                play_thread.join(timeout=30)
            time.sleep(min(3.0, 1.0 + args.sample_period))  # let the last outputs arrive
            clean_exit = False
            if proc.poll() is None:  # a node that had already exited did not exit cleanly on request
                clean_exit = stop_process(proc, timeout=60) == 0
            logf.close()
            spinner.stop()
            player_node.destroy_node()
            mon.destroy_node()
            rclpy.try_shutdown(context=ctx)
        log_text = node_log.read_text(errors="replace")
        play = play_box.get("result")
        rep = checker.report.as_dict()
        missing_topics = sorted(t for t in expected if rep["messages"].get(t, 0) == 0)
        result = {
            "benchmark": "soak",
            "machine": {"label": args.machine or machine_label(), "cpu_cores": os.cpu_count(),
                        "python": platform.python_version(), "platform": platform.platform(),
                        "gpu": _gpu_name()},
            "config": {"params_file": str(args.params_file), "overrides": list(args.param),
                       "device": params.get("model.device"), "model": params.get("model.config"),
                       "cameras": cams, "window_steps": params.get("window.num_steps"),
                       "bag": str(args.bag) if args.bag else "synthetic", "bag_seconds_per_loop": round(bag_span_s, 3),
                       "image_size": [args.width, args.height] if args.bag is None else None,
                       "bag_rate_hz": args.bag_rate if args.bag is None else None, "play_rate": args.rate,
                       "duration_s": args.duration, "sample_period_s": args.sample_period,
                       "max_odom_step_m": args.max_odom_step},
            "note": args.note, "git_commit": commit, "ros_domain_id": env.get("ROS_DOMAIN_ID"),
            "wall_s": round(time.monotonic() - t_start, 2),
            "player": None if play is None else {"loops": play.loops, "published": play.published,
                                                 "summary": play.summary()},
            "player_error": play_box.get("error"),
            "input_restarts_seen": input_state["restarts"],
            "node_exit_code": proc.returncode,
            "node_log": {"tracebacks": log_text.count("Traceback"), "errors": log_text.count("[ERROR]"),
                         "warnings": log_text.count("[WARN]"), "tail": log_text[-1500:]},
            "integrity": dict(rep, missing_topics=missing_topics),
            "samples": samples,
        }
        integrity_ok = rep["ok"] and not missing_topics
        result["verdict"] = verdict(samples, integrity_ok, alive, clean_exit, args.rss_slope_mib_per_min)
        if samples:
            rss = [s["rss_mib"] for s in samples]
            result["summary"] = {
                "rss_mib_start": rss[0], "rss_mib_end": rss[-1], "rss_mib_max": max(rss),
                "threads_start": samples[0]["threads"], "threads_end": samples[-1]["threads"],
                "gpu_mib_max": max((s["gpu_mib"] for s in samples if s["gpu_mib"] is not None), default=None),
                "odometry_messages": samples[-1]["outputs"]["odometry"],
                "output_rate_hz_mean": samples[-1]["outputs"]["odometry"] / max(1e-6, samples[-1]["t_s"]),
                "loops": None if play is None else play.loops,
                "resets": samples[-1]["node"].get("resets"), "errors": samples[-1]["node"].get("errors"),
                "windows": samples[-1]["node"].get("windows"),
                "windows_skipped": samples[-1]["node"].get("windows_skipped"),
            }
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _monitor_callback(on_msg, topic: str, msgtype: str):
    """A subscription callback for ``on_msg(topic, msgtype, msg, info)``; with two parameters rclpy (Iron
    and later) passes the message info (sequence numbers), Humble's rclpy only the message."""
    from rclpy.subscription import Subscription

    if hasattr(Subscription, "CallbackType"):
        def cb(msg, info):
            on_msg(topic, msgtype, msg, info)
    else:  # pragma: no cover - Humble
        def cb(msg):
            on_msg(topic, msgtype, msg, None)
    return cb


def _git_commit() -> Optional[str]:
    try:
        res = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() or None


def _tail(path: Path, n: int = 5) -> str:
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


def _gpu_name() -> Optional[str]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        res = subprocess.run([exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=10)
        return res.stdout.strip().splitlines()[0] if res.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def plot(result: Dict[str, Any], path: Path) -> None:
    """Four panels over time: RSS (with the second-half fit), threads, output rate, GPU memory or counters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["samples"]
    t = np.array([x["t_s"] for x in s]) / 60.0
    fig, ax = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    rss = np.array([x["rss_mib"] for x in s])
    ax[0, 0].plot(t, rss, lw=1)
    v = result["verdict"]
    if len(t) >= 6:
        half = t >= t[0] + (t[-1] - t[0]) / 2
        k, b = np.polyfit(t[half], rss[half], 1)
        ax[0, 0].plot(t[half], k * t[half] + b, "r--", lw=1, label=f"fit {k:+.2f} MiB/min")
        ax[0, 0].legend(loc="lower right")
    ax[0, 0].set_ylabel("node RSS (MiB)")
    ax[0, 1].step(t, [x["threads"] for x in s], where="post")
    ax[0, 1].set_ylabel("node threads")
    rate = np.array([x["output_rate_hz"] for x in s])
    ax[1, 0].plot(t, rate, lw=0.8, alpha=0.5, label="per sample")
    if len(rate) >= 10:
        w = 10
        ax[1, 0].plot(t[w - 1:], np.convolve(rate, np.ones(w) / w, mode="valid"), lw=1.5, label=f"mean of {w}")
    ax[1, 0].set_ylabel("odometry rate (Hz)")
    ax[1, 0].legend(loc="lower right")
    gpu = [x["gpu_mib"] for x in s]
    if any(g is not None for g in gpu):
        ax[1, 1].plot(t, [np.nan if g is None else g for g in gpu])
        ax[1, 1].set_ylabel("node GPU memory (MiB)")
    else:
        for key in ("windows_skipped", "frames_dropped", "resets", "errors"):
            ax[1, 1].plot(t, [np.nan if x["node"].get(key) is None else x["node"][key] for x in s], label=key)
        ax[1, 1].set_ylabel("node counters")
        ax[1, 1].legend(loc="upper left")
    for a in ax[1]:
        a.set_xlabel("minutes")
    cfg = result["config"]
    fig.suptitle(f"vggt4d soak: {cfg['model']} on {cfg['device']}, {len(cfg['cameras'])} cameras, "
                 f"{result['machine']['label']}; verdict {'PASS' if v.get('pass') else 'FAIL'} "
                 f"(RSS slope {v.get('rss_slope_second_half_mib_per_min', float('nan')):+.2f} MiB/min)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``vggt4d-soak``; returns the exit status."""
    args = build_parser().parse_args(strip_ros_args(argv))
    if args.duration <= 0 or args.sample_period <= 0:
        print("vggt4d-soak: error: --duration and --sample-period must be > 0", file=sys.stderr)
        return 2
    say = (lambda s: None) if args.quiet else (lambda s: print(f"[vggt4d-soak] {s}", file=sys.stderr, flush=True))
    try:
        result = run_soak(args, log=say)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"vggt4d-soak: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vggt4d-soak: interrupted", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=_json_default) + "\n")
    if not args.no_plot and result.get("samples"):
        plot(result, args.plot or args.out.with_suffix(".png"))
    v = result["verdict"]
    print(json.dumps({"verdict": v, "summary": result.get("summary"),
                      "integrity_ok": result["integrity"]["ok"], "out": str(args.out)}, default=_json_default))
    return 0 if v.get("pass") else 1


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


if __name__ == "__main__":
    sys.exit(main())
