"""vggt4d-bag play options: --start/--duration window, --topics, --loop, unknown (unbuilt) message types."""
import random
import subprocess
import sys
from pathlib import Path

import numpy as np

from vggt4d_ros.bag.io import bag_time_range, make_qos, open_writer, read_messages
from vggt4d_ros.bag.synth import write_synthetic_bag
from vggt4d_ros.bag.typestore import get_typestore
from vggt4d_ros.rosenv import localhost_env

ROOT = Path(__file__).resolve().parents[1]
DOMAIN = random.randint(70, 99)
UNBUILT = "shape_msgs/msg/Plane"  # in the Jazzy type store, but no Python package for it here


def _play(*args):
    return subprocess.run(
        [sys.executable, "-m", "vggt4d_ros.bag.cli", "play", *args], cwd=ROOT,
        env=localhost_env(domain_id=DOMAIN), capture_output=True, text=True, timeout=60,
    )


def _bag_with_unbuilt_type(tmp_path):
    bag = tmp_path / "cams"
    write_synthetic_bag(bag, cameras=1, steps=20, hz=20.0, tf_static=False, namespace="/po")
    # copy it into a second bag with an extra topic whose type cannot be imported
    out = tmp_path / "mixed"
    store = get_typestore()
    plane = store.serialize_cdr(store.types[UNBUILT](coef=np.array([0.0, 0.0, 1.0, 0.0])), UNBUILT)
    with open_writer(out) as w:
        w.add_topic("/po/plane", UNBUILT, [make_qos()])
        for topic, msgtype, t_ns, raw in read_messages(bag):
            if not w.has_topic(topic):
                w.add_topic(topic, msgtype, [make_qos()])
            w.write(topic, t_ns, raw)
            if topic.endswith("image_raw"):
                w.write("/po/plane", t_ns, plane)
    return out


def test_unknown_type_errors_or_is_skipped(tmp_path):
    bag = _bag_with_unbuilt_type(tmp_path)
    bad = _play(str(bag), "--rate", "0")
    assert bad.returncode == 1
    err = bad.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vggt4d-bag: error:") and UNBUILT in err[0], bad.stderr

    ok = _play(str(bag), "--rate", "0", "--skip-unknown")
    assert ok.returncode == 0, ok.stderr
    assert "played 40 messages on 2 topics" in ok.stdout and "skipped: /po/plane" in ok.stdout, ok.stdout
    assert UNBUILT in ok.stderr  # the warning names the type


def test_start_duration_topics_loop(tmp_path):
    bag = tmp_path / "b"
    write_synthetic_bag(bag, cameras=2, steps=20, hz=20.0, tf_static=False, namespace="/pw")
    first, _last = bag_time_range(bag)
    lo, hi = first + 300_000_000, first + 300_000_000 + 400_000_000
    want = sum(1 for m in read_messages(bag, ["/pw/cam1/image_raw"]) if lo <= m.stamp_ns < hi)
    assert 0 < want < 20
    proc = _play(str(bag), "--rate", "0", "--start", "0.3", "--duration", "0.4", "--topics", "/pw/cam1/image_raw",
                 "--loop", "2")
    assert proc.returncode == 0, proc.stderr
    assert f"played {2 * want} messages on 1 topics" in proc.stdout and "2 loop(s)" in proc.stdout, proc.stdout
