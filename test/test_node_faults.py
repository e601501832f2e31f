"""Bad input reaches the node (in-process, real rclpy and DDS): a clear throttled warning, the node keeps
running, the other cameras are not disturbed, and outputs stay finite."""
import time

import numpy as np
import pytest
from node_harness import DT, H, T0, W, NodeHarness, harness_fixture

TOPICS = {"/vggt4d/odometry": "nav_msgs/msg/Odometry", "/vggt4d/status": "vggt4d_ros/msg/WindowStatus",
          "/vggt4d/cam0/depth": "sensor_msgs/msg/Image", "/vggt4d/cam1/depth": "sensor_msgs/msg/Image"}


class Harness(NodeHarness):
    def __init__(self, **overrides):
        super().__init__("faults", TOPICS, overrides)
        self.odom = self.msgs["/vggt4d/odometry"]
        self.status = self.msgs["/vggt4d/status"]
        self.depth = {c: self.msgs[f"/vggt4d/{c}/depth"] for c in ("cam0", "cam1")}

    def send(self, cam, t_ns, *, encoding="rgb8", width=W, height=H, info_wh=None, data=None, info=True):
        """An image of ``encoding``; its CameraInfo unless ``info`` is False, sized ``info_wh`` when given."""
        if info:
            iw, ih = info_wh or (width, height)
            self.info[cam].publish(self.camera_info(cam, t_ns, iw, ih))
        self.img[cam].publish(self.image(cam, t_ns, encoding=encoding, width=width, height=height, data=data))


@pytest.fixture
def harness():
    hs, make = harness_fixture(Harness)
    yield make
    for h in hs:
        h.close()


def _pos(o):
    p = o.pose.pose.position
    return np.array([p.x, p.y, p.z])


def _drive(h, steps, start=0, **cam1_kw):
    for i in range(start, start + steps):
        t = T0 + i * DT
        h.send("cam0", t)
        h.send("cam1", t, **cam1_kw)
        n = len(h.status)
        # Pace by the node's acks; a step can legitimately wait for a late camera (synchroniser slack).
        h.wait(lambda: len(h.status) > n, 5)


def test_unsupported_encoding_rejected_other_camera_continues(harness):
    h = harness()
    _drive(h, 8, encoding="32FC1")
    assert h.wait(lambda: len(h.odom) >= 3)
    assert h.node.frontend.rejected.get("cam1", 0) >= 8 and h.node.frontend.rejected.get("cam0", 0) == 0
    assert len(h.depth["cam1"]) == 0 and len(h.depth["cam0"]) >= 3
    assert all(np.isfinite(_pos(o)).all() for o in h.odom)


def test_data_inconsistent_with_size_and_camera_info_mismatch(harness):
    h = harness()
    _drive(h, 4, data=b"\x00" * 17)  # data length does not match height * step
    # CameraInfo says 640x480, images are 112x70 (the info goes first: topics are not ordered between them).
    h.send("cam1", T0 + 3 * DT + DT // 2, info_wh=(640, 480), data=b"")
    time.sleep(0.5)
    _drive(h, 4, start=4, info_wh=(640, 480))
    assert h.wait(lambda: len(h.depth["cam0"]) >= 3)
    assert h.node.frontend.rejected.get("cam1", 0) >= 8 and len(h.depth["cam1"]) == 0


def test_missing_camera_info_waits_and_keeps_others(harness):
    h = harness()
    _drive(h, 6, info=False)
    assert h.wait(lambda: len(h.depth["cam0"]) >= 2)
    assert len(h.depth["cam1"]) == 0


def test_stamps_backwards_reset_without_odometry_jump(harness):
    h = harness()
    _drive(h, 5)
    assert h.wait(lambda: len(h.odom) >= 4)
    before = _pos(h.odom[-1])
    n = len(h.odom)
    _drive(h, 4, start=-20)  # a bag loop: stamps 2 s earlier
    assert h.wait(lambda: len(h.odom) >= n + 2)
    assert h.node.frontend.counters["resets"] >= 1
    after = [_pos(o) for o in h.odom[n:]]
    assert all(np.isfinite(p).all() for p in after)
    steps = np.linalg.norm(np.diff(np.array([before] + after), axis=0), axis=1)
    assert steps.max() < 1.0, steps  # attached at the last pose: no jump to a new origin


def test_cameras_with_different_sizes(harness):
    h = harness()
    _drive(h, 4, width=160, height=90)
    assert h.wait(lambda: len(h.depth["cam1"]) >= 2 and len(h.depth["cam0"]) >= 2)
    assert (h.depth["cam0"][-1].width, h.depth["cam0"][-1].height) == (W, H)
    assert (h.depth["cam1"][-1].width, h.depth["cam1"][-1].height) == (160, 90)


def test_constant_images_give_finite_outputs(harness):
    h = harness()
    for i in range(4):
        t = T0 + i * DT
        for c in ("cam0", "cam1"):
            h.send(c, t, data=b"\x00" * (W * H * 3))
        n = len(h.status)
        h.wait(lambda: len(h.status) > n, 5)
    assert h.wait(lambda: len(h.odom) >= 2)
    for o in h.odom:
        assert np.isfinite(_pos(o)).all()
    for m in h.depth["cam0"]:
        d = np.frombuffer(bytes(m.data), "<f4")
        assert not np.isinf(d).any() and (d[np.isfinite(d)] > 0).all()


def test_bad_parameter_at_run_time_is_rejected_and_old_value_kept(harness):
    from rclpy.parameter import Parameter

    h = harness()
    res = h.node.set_parameters([Parameter("mask.threshold", value=1.5)])
    assert not res[0].successful and "mask.threshold" in res[0].reason
    assert h.node.get_parameter("mask.threshold").value == 0.5
    res = h.node.set_parameters([Parameter("odom.pose_covariance", value=[0.0] * 6)])
    assert not res[0].successful
    res = h.node.set_parameters([Parameter("mask.threshold", value=0.7)])
    assert res[0].successful and h.node.get_parameter("mask.threshold").value == 0.7
    res = h.node.set_parameters([Parameter("window.num_steps", value=8)])  # static while running
    assert not res[0].successful


def test_static_map_published_and_saved_by_service(harness, tmp_path):
    from sensor_msgs.msg import PointCloud2
    from std_srvs.srv import Trigger

    from vggt4d_ros.perception.mapping import read_ply
    from vggt4d_ros.ros.pointcloud import cloud_xyz

    path = tmp_path / "map.ply"
    h = harness(**{"map.save_path": str(path), "map.publish_period_s": 0.2, "map.min_observations": 1,
                   "cloud.drop_dynamic": False, "mask.threshold": 1.0})
    maps = []
    h.test.create_subscription(PointCloud2, "/vggt4d/map", maps.append, 10)
    time.sleep(0.5)
    _drive(h, 5)
    assert h.wait(lambda: len(maps) >= 1 and maps[-1].width > 0, 30), "no ~/map published"
    m = maps[-1]
    assert m.header.frame_id == "odom" and m.height == 1
    assert np.isfinite(cloud_xyz(m)).all()
    cli = h.test.create_client(Trigger, "/vggt4d/save_map")
    assert cli.wait_for_service(timeout_sec=10)
    fut = cli.call_async(Trigger.Request())
    assert h.wait(lambda: fut.done(), 30)
    assert fut.result().success, fut.result().message
    xyz, rgb = read_ply(path)
    assert len(xyz) > 0 and np.isfinite(xyz).all() and rgb.dtype == np.uint8


def test_auto_reliability_receives_every_large_image_from_a_reliable_publisher(harness):
    """qos.reliability auto re-subscribes reliable once it sees the (reliable) camera publishers, so large
    images are not lost in fragments as a best-effort subscription loses them on this transport."""
    from rclpy.qos import ReliabilityPolicy

    h = harness(**{"model.target_width": 112})
    assert h.wait(lambda: all(v[1] == ReliabilityPolicy.RELIABLE for v in h.node._sensors.subs.values()), 20)
    time.sleep(0.5)
    for i in range(6):
        t = T0 + i * DT
        for c in ("cam0", "cam1"):
            h.send(c, t, width=640, height=360)
        time.sleep(0.2)
    assert h.wait(lambda: h.node.frontend.counters["steps_in"] >= 5, 60), h.node.frontend.counters
    assert h.node.frontend.rejected == {}
