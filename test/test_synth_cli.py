"""vggt4d-synth: exit codes, one-line errors, output paths, no partial bag after a failure."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vggt4d_ros.data.bagwriter import resolve_bag_path, write_synth_bag
from vggt4d_ros.data.synth import SynthConfig, SynthSequence
from vggt4d_ros.tools.synth_cli import main

TINY = ["--width", "48", "--height", "32", "--duration", "0.3", "--tracks", "16", "--quiet"]


@pytest.mark.parametrize("args, words", [
    (["--width", "0"], "width must be positive"),
    (["--width", "abc"], "invalid int value"),
    (["--rate", "-1"], "rate_hz must be positive"),
    (["--cameras", "0"], "num_cameras must be positive"),
    (["--no-raw"], "--no-raw needs --compressed"),
    (["--storage", "sqlite3"], "implies storage mcap"),
    (["--jitter-ms", "80"], "jitter_ms"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, args, words):
    rc = main([str(tmp_path / "o.mcap"), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert words in err and err.startswith("vggt4d-synth: error:") and "\n" not in err
    assert not any(tmp_path.iterdir())


def test_writes_the_file_the_name_says_and_refuses_to_overwrite(tmp_path, capsys):
    from vggt4d_ros.bag.cli import main as bag_main

    out = tmp_path / "run.mcap"
    assert main([str(out), *TINY, "--compressed", "--no-raw"]) == 0
    summary = capsys.readouterr().out.strip()
    assert summary.startswith(f"wrote {out} (mcap): 3 frames x 2 cameras 48x32")
    assert out.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["run.mcap"]  # one file, no folder
    assert f"{out.stat().st_size / 1e6:.1f} MB" in summary
    # what the name says is what the bag tools open
    assert bag_main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert info.startswith(f"{out}: ") and "/cam0/image_raw/compressed  sensor_msgs/msg/CompressedImage  3" in info
    assert "/tf_static  tf2_msgs/msg/TFMessage  1  (latched)" in info  # QoS kept inside the file
    assert main([str(out), *TINY]) == 1
    assert "exists already" in capsys.readouterr().err
    assert main([str(tmp_path / "missing" / "x"), *TINY]) == 1
    assert main([str(tmp_path / "one.db3"), *TINY, "--cameras", "1"]) == 0
    assert (tmp_path / "one.db3").is_file() and bag_main(["info", str(tmp_path / "one.db3")]) == 0
    capsys.readouterr()
    # any other name is a rosbag2 bag directory
    assert main([str(tmp_path / "dirbag"), *TINY, "--storage", "sqlite3", "--cameras", "1"]) == 0
    assert (tmp_path / "dirbag" / "dirbag.db3").is_file() and (tmp_path / "dirbag" / "metadata.yaml").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dirbag", "one.db3", "run.mcap"]


def test_console_entry_exit_status(tmp_path):
    r = subprocess.run([sys.executable, "-m", "vggt4d_ros.tools.synth_cli", str(tmp_path / "x"), "--height", "-2"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == "vggt4d-synth: error: height must be positive (got -2)"


def test_failed_run_leaves_nothing(tmp_path):
    seq = SynthSequence(SynthConfig(width=48, height=32, duration_s=0.5, texture_px=64, num_tracks=8))

    def progress(done, total):
        if done == 2:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        write_synth_bag(seq, tmp_path / "bag.mcap", progress=progress)
    assert list(tmp_path.iterdir()) == []


def test_resolve_bag_path(tmp_path):
    assert resolve_bag_path("a/b.mcap") == (Path("a/b.mcap"), "mcap") and resolve_bag_path("a/b")[0] == Path("a/b")
    assert resolve_bag_path("a/b.db3")[1] == "sqlite3"
    assert resolve_bag_path("a/b", "sqlite3")[1] == "sqlite3"
    with pytest.raises(ValueError):
        resolve_bag_path("a/b.db3", "mcap")
