"""vggt4d_ros.ros.messages.step_messages: the fused cloud is exactly the valid, static, decimated points of
every camera moved into odom, read back from the PointCloud2 bytes with sensor_msgs' field table."""
import numpy as np
import pytest

pytest.importorskip("rclpy")

from scipy.spatial.transform import Rotation  # noqa: E402

from vggt4d_ros.eval.config import load_params  # noqa: E402
from vggt4d_ros.perception.pipeline import CameraOutput, StepOutput  # noqa: E402
from vggt4d_ros.ros.conversions import make_header  # noqa: E402
from vggt4d_ros.ros.messages import step_messages  # noqa: E402
from vggt4d_ros.ros.pointcloud import cloud_dtype  # noqa: E402

H, W = 23, 37  # odd sizes: decimation leaves a partial last row and column


@pytest.mark.parametrize("decimation", [1, 2, 3])
def test_fused_cloud_is_decimated_static_valid_points_in_odom(decimation):
    rng = np.random.default_rng(decimation)
    params = load_params(None)
    params.update({"cameras": ["a", "b"], "cloud.decimation": decimation, "cloud.drop_dynamic": True,
                   "cloud.min_confidence": 2.0, "mask.threshold": 0.5})
    cams, T, expect_xyz, expect_rgb = {}, {}, [], []
    for c in ("a", "b"):
        pts = rng.normal(size=(H, W, 3)).astype(np.float32)
        depth = rng.uniform(0.5, 5, (H, W)).astype(np.float32)
        depth[rng.random((H, W)) < 0.1] = np.nan
        conf = rng.uniform(0, 4, (H, W)).astype(np.float32)
        dyn = rng.random((H, W)).astype(np.float32)
        rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        M = np.eye(4)
        M[:3, :3] = Rotation.from_rotvec(rng.normal(size=3)).as_matrix()
        M[:3, 3] = rng.normal(size=3) * 3
        T[c] = M
        hdr = make_header(f"{c}_optical", 5)
        cams[c] = CameraOutput(name=c, frame_id=f"{c}_optical", stamp=hdr.stamp, stamp_ns=5, depth=depth,
                               confidence=conf, dynamic=dyn, K=np.eye(3), points_cam=pts, rgb=rgb)
        for y in range(0, H, decimation):  # the definition, pixel by pixel
            for x in range(0, W, decimation):
                if np.isfinite(depth[y, x]) and conf[y, x] >= 2.0 and dyn[y, x] < 0.5:
                    expect_xyz.append(M[:3, :3] @ pts[y, x].astype(np.float64) + M[:3, 3])
                    expect_rgb.append(rgb[y, x])
    step = StepOutput(step_id=0, stamp=cams["a"].stamp, stamp_ns=5, cameras=cams, T_odom_cam=T,
                      T_odom_base=np.eye(4))
    msgs = {topic: m for topic, _, m in step_messages(params, step)}
    cloud = msgs["/vggt4d/points/fused"]
    assert cloud.header.frame_id == params["odom_frame"] and cloud.height == 1 and cloud.is_dense
    arr = np.frombuffer(bytes(cloud.data), dtype=cloud_dtype(cloud))
    got = np.stack([arr["x"], arr["y"], arr["z"]], -1)
    assert got.shape == (len(expect_xyz), 3)
    np.testing.assert_allclose(got, np.array(expect_xyz), atol=2e-5)
    rgb_word = arr["rgb"].view(np.uint32)
    rgb = np.stack([(rgb_word >> 16) & 255, (rgb_word >> 8) & 255, rgb_word & 255], -1)
    np.testing.assert_array_equal(rgb, np.array(expect_rgb))
