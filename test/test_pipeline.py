"""Pipeline configuration errors are clear and raised before any work."""
import pytest

from vggt4d_ros.perception.pipeline import RANDOM_INIT, Pipeline, PipelineConfig, resolve_checkpoint


def test_missing_checkpoint_and_unknown_model_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_checkpoint("tiny", str(tmp_path / "nope.safetensors"))
    with pytest.raises(FileNotFoundError, match="ships no embedded weights"):
        resolve_checkpoint("vggt-1b", "")
    assert resolve_checkpoint("tiny", RANDOM_INIT) is None
    assert resolve_checkpoint("tiny", "").endswith("tiny.safetensors")
    with pytest.raises(Exception, match="nonexistent-model"):
        Pipeline(PipelineConfig(cameras=["cam0"], model_config="nonexistent-model", checkpoint=RANDOM_INIT))


def test_onnx_backend_needs_an_existing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="vggt4d-export"):
        Pipeline(PipelineConfig(cameras=["cam0"], backend="onnxruntime", onnx_path=str(tmp_path / "m.onnx")))
