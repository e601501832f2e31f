"""Keypoint MarkerArray fields (real visualization_msgs messages, serialised through rclpy)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("visualization_msgs")

from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from vggt4d_ros.ros.markers import KeypointMarkers, id_colors, keypoint_markers  # noqa: E402


def _header():
    return Header(frame_id="cam0_optical_frame", stamp=Time(sec=12, nanosec=345))


def test_fields_of_sphere_list_and_labels():
    xyz = np.array([[0.0, 0.1, 1.0], [np.nan, 0.0, 2.0], [1.0, -0.5, 3.0]])
    ids = np.array([11, 12, 2**40 + 5], np.uint64)
    msg = keypoint_markers(_header(), xyz, ids, ns="kp", lifetime_s=1.25, scale=0.1)
    msg = deserialize_message(serialize_message(msg), MarkerArray)  # the wire form holds the same
    acts = [(m.action, m.type, m.ns, m.id) for m in msg.markers]
    assert acts == [(Marker.DELETEALL, 0, "kp", 0), (Marker.ADD, Marker.SPHERE_LIST, "kp", 0),
                    (Marker.ADD, Marker.TEXT_VIEW_FACING, "kp/ids", 11),
                    (Marker.ADD, Marker.TEXT_VIEW_FACING, "kp/ids", 5)]  # 2^40 + 5 folded to int32
    sph = msg.markers[1]
    assert sph.header.frame_id == "cam0_optical_frame" and sph.header.stamp.sec == 12
    assert sph.header.stamp.nanosec == 345
    assert (sph.lifetime.sec, sph.lifetime.nanosec) == (1, 250_000_000)
    assert sph.scale.x == pytest.approx(0.1) and sph.pose.orientation.w == 1.0
    np.testing.assert_allclose([[p.x, p.y, p.z] for p in sph.points], xyz[[0, 2]])
    cols = id_colors(ids[[0, 2]])
    np.testing.assert_allclose([[c.r, c.g, c.b] for c in sph.colors], cols, atol=1e-6)
    assert all(c.a == 1.0 for c in sph.colors)
    lab = msg.markers[2]
    assert lab.text == "11" and msg.markers[3].text == str(2**40 + 5)
    assert (lab.pose.position.x, lab.pose.position.y, lab.pose.position.z) == pytest.approx((0.0, 0.1 - 0.15, 1.0))
    assert lab.scale.z == pytest.approx(0.1)


def test_colours_are_stable_per_id_and_distinct():
    c = id_colors(np.arange(1, 65))
    assert c.shape == (64, 3) and np.all((c >= 0) & (c <= 1))
    np.testing.assert_array_equal(id_colors(np.array([7, 3])), c[[6, 2]])
    assert len({tuple(np.round(x, 3)) for x in c}) == 64


def test_deleteall_only_when_the_set_changes():
    km = KeypointMarkers(labels=False)
    h = _header()
    xyz = np.array([[0, 0, 1.0], [1, 0, 1.0]])
    first = km.build(h, xyz, np.array([1, 2]))
    assert [m.action for m in first.markers] == [Marker.DELETEALL, Marker.ADD]
    same = km.build(h, xyz + 0.5, np.array([2, 1]))  # same ids moved: no delete
    assert [m.action for m in same.markers] == [Marker.ADD]
    changed = km.build(h, xyz, np.array([1, 3]))
    assert [m.action for m in changed.markers] == [Marker.DELETEALL, Marker.ADD]
    # A point whose depth becomes unknown leaves the set too.
    gone = km.build(h, np.array([[0, 0, 1.0], [np.nan, 0, 1.0]]), np.array([1, 3]))
    assert [m.action for m in gone.markers] == [Marker.DELETEALL, Marker.ADD] and len(gone.markers[1].points) == 1
    empty = keypoint_markers(h, np.zeros((0, 3)), np.zeros(0, np.uint64), previous_ids=[])
    assert [m.type for m in empty.markers] == [Marker.SPHERE_LIST] and not empty.markers[0].points
    with pytest.raises(ValueError):
        keypoint_markers(h, xyz, np.array([1]))
