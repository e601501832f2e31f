"""``vggt4d-synth``: render a synthetic dynamic multi-camera sequence with exact ground truth into a bag.

    vggt4d-synth OUT.mcap|OUT.db3|OUT_DIR [--cameras N] [--width W] [--height H] [--rate HZ]
                 [--duration S] [--seed N] [--speed F] [--objects K] [--storage mcap|sqlite3]
                 [--compressed] [--no-raw] [--no-gt] [--jitter-ms MS] ...

``OUT.mcap`` writes that single MCAP file (``vggt4d-bag info OUT.mcap``, ``vggt4d-replay OUT.mcap`` and
``ros2 bag info OUT.mcap`` open it), ``OUT.db3`` a single sqlite3 file, and any other path is written as a
rosbag2 bag directory (``OUT/metadata.yaml`` and ``OUT/OUT.mcap``).
Exit status: 0 on success, 2 for bad arguments, 1 when the bag cannot be written. Topics are listed in
``docs/synthetic-data.md``.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from ..bag.io import BagError
from ..cli_util import strip_ros_args


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exits with status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"vggt4d-synth: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vggt4d-synth",
                description="Render a synthetic dynamic multi-camera sequence with exact ground truth into a rosbag2 bag.")
    p.add_argument("out", help="OUT.mcap or OUT.db3 (that single file) or a bag directory path")
    p.add_argument("--cameras", type=int, default=2, help="number of cameras (default 2)")
    p.add_argument("--width", type=int, default=518, help="image width in pixels (default 518)")
    p.add_argument("--height", type=int, default=294, help="image height in pixels (default 294)")
    p.add_argument("--rate", type=float, default=10.0, help="frame rate in Hz (default 10)")
    p.add_argument("--duration", type=float, default=10.0, help="duration in seconds (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--speed", type=float, default=1.0, help="motion speed factor for rig and objects (default 1)")
    p.add_argument("--objects", type=int, default=3, help="number of moving objects (default 3)")
    p.add_argument("--static-objects", type=int, default=10, help="number of static objects (default 10)")
    p.add_argument("--baseline", type=float, default=0.3, help="camera spacing in metres (default 0.3)")
    p.add_argument("--fov", type=float, default=70.0, help="horizontal field of view in degrees (default 70)")
    p.add_argument("--tracks", type=int, default=512, help="number of ground-truth track points (default 512)")
    p.add_argument("--jitter-ms", type=float, default=0.0, help="per-camera stamp jitter in ms (default 0)")
    p.add_argument("--noise", type=float, default=1.5, help="sensor noise std in 8-bit levels (default 1.5)")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default=None,
                   help="bag storage (default: from the suffix, else mcap)")
    p.add_argument("--compressed", action="store_true", help="also write <cam>/image_raw/compressed (JPEG)")
    p.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality 1-100 (default 90)")
    p.add_argument("--no-raw", action="store_true", help="do not write <cam>/image_raw")
    p.add_argument("--no-gt", action="store_true", help="do not write the /gt/... ground-truth topics")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``vggt4d-synth`` console script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(strip_ros_args(argv))
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return int(exc.code or 0)

    from ..data.bagwriter import resolve_bag_path, write_synth_bag
    from ..data.synth import SynthConfig, SynthSequence

    def fail(code: int, message: str) -> int:
        print(f"vggt4d-synth: error: {message}", file=sys.stderr)
        return code

    cfg = SynthConfig(seed=args.seed, num_cameras=args.cameras, width=args.width, height=args.height,
                      rate_hz=args.rate, duration_s=args.duration, speed=args.speed,
                      num_moving_objects=args.objects, num_static_objects=args.static_objects,
                      baseline_m=args.baseline, fov_deg=args.fov, num_tracks=args.tracks,
                      jitter_ms=args.jitter_ms, noise_std=args.noise)
    try:
        cfg.validate()
        if args.no_raw and not args.compressed:
            raise ValueError("--no-raw needs --compressed (no image topic would be written)")
        if not 1 <= args.jpeg_quality <= 100:
            raise ValueError(f"--jpeg-quality must be in [1, 100] (got {args.jpeg_quality})")
        path, storage = resolve_bag_path(args.out, args.storage)
    except ValueError as exc:
        return fail(2, str(exc))
    if path.exists():
        return fail(1, f"output exists already, not overwriting: {path}")
    if not path.parent.is_dir():
        return fail(1, f"output directory does not exist: {path.parent}")

    seq = SynthSequence(cfg)
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=seq.num_frames, unit="frame", desc="vggt4d-synth", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.update(done - bar.n)

    try:
        summary = write_synth_bag(seq, path, storage=storage, raw=not args.no_raw, compressed=args.compressed,
                                  jpeg_quality=args.jpeg_quality, ground_truth=not args.no_gt, progress=progress)
    except (BagError, OSError, ValueError) as exc:
        return fail(1, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    finally:
        if bar is not None:
            bar.close()
    print(f"wrote {summary.path} ({summary.storage}): {summary.frames} frames x {summary.cameras} cameras "
          f"{cfg.width}x{cfg.height} @ {cfg.rate_hz:g} Hz, {summary.messages} messages, "
          f"{summary.bytes / 1e6:.1f} MB in {summary.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
