#!/usr/bin/env python3
"""Dev-only: make the 4D-VGGT v1.0 parity fixture from the RELEASE's own code.

Usage::

    python scripts/make_4dvggt_fixture.py /path/to/4d-vggt-checkout [--out-dir test/data/model]

The release (github Haonan-Wang-aurora/4D-VGGT, commit f9c6efe: ``four_d_vggt/`` with its ``layers`` being
VGGT's ``vggt/layers``) is imported from the given checkout, never copied into this project.
``huggingface_hub`` (a mixin only) and ``torchvision`` (``transforms.ToTensor`` only, for ``load_fn``) are
stubbed when missing.

The script builds a small ``FourDVGGT`` with the release's classes (conv patch embed, embed_dim 32, depth 4,
window_size 5), gives every parameter seeded random values exactly representable in fp16 (so the checkpoint
stores fp16 at half the size and loads into fp32 unchanged), with a non-zero ``relative_time_bias`` per head
and window offset and non-zero ``alpha`` gates so both matter, runs it in fp32 on fixed frames (S = 6: edge
and interior windows), and writes:

- ``4dvggt_small.pt``: the release's checkpoint format (``checkpoint_payload``: metadata keys,
  ``model_config``, ``model``), readable with ``torch.load(weights_only=True)``;
- ``4dvggt_small_io.safetensors``: ``input.images_u8`` (S, 3, H, W) uint8 (the model input is ``u8 / 255``),
  ``output.<name>`` (``output.pose_enc_list.<i>``), and the release's parameter count of the default
  configuration built on ``meta`` in the metadata (``default_param_count``, ``default_tensor_count``);
- ``4dvggt_load_fn.safetensors``: the release's preprocessing (``four_d_vggt/utils/load_fn.py``,
  ``load_and_preprocess_images``) of seeded images (4:3, 16:9, portrait, an upscaled one, an RGBA one) saved
  as PNG, in ``crop`` and ``pad`` mode at ``target_size`` 56: ``input.<name>`` (H, W, C) uint8 and
  ``<mode>.<name>`` (3, H, W) = the release's output x 255 as uint8 (its values are k / 255 exactly).

``test/test_model_4dvggt.py`` loads the checkpoint into this project's ``build_model(architecture="4d-vggt")``
and compares.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

#: the small model, in FourDVGGT's own constructor vocabulary (also the project's build_model kwargs).
CONFIG = {
    "img_size": 56,
    "patch_size": 14,
    "embed_dim": 32,
    "depth": 4,
    "num_heads": 4,
    "patch_embed": "conv",
    "window_size": 5,
    "cached_layer_indices": [0, 1, 2, 3],
    "spatial_head_options": {"num_heads": 4, "trunk_depth": 1},
    "dense_head_options": {"features": 8, "out_channels": [8, 16, 16, 16]},
}
FRAMES, HEIGHT, WIDTH = 6, 42, 56


def _stub(name: str, **attrs) -> None:
    try:
        __import__(name)
    except ImportError:
        mod = types.ModuleType(name)
        for k, v in attrs.items():
            setattr(mod, k, v)
        sys.modules[name] = mod


class _ToTensor:
    """torchvision's ToTensor for PIL RGB images: uint8 HWC -> float CHW / 255."""

    def __call__(self, pic):
        return torch.from_numpy(np.array(pic, copy=True)).permute(2, 0, 1).contiguous().float().div(255)


def import_release(root: Path):
    sys.path.insert(0, str(root))
    _stub("huggingface_hub", PyTorchModelHubMixin=type("PyTorchModelHubMixin", (), {}))
    try:
        import torchvision  # noqa: F401
    except ImportError:
        tv = types.ModuleType("torchvision")
        tv.transforms = types.ModuleType("torchvision.transforms")
        tv.transforms.ToTensor = _ToTensor
        sys.modules["torchvision"], sys.modules["torchvision.transforms"] = tv, tv.transforms
    from four_d_vggt.compat.checkpoint import checkpoint_payload, load_checkpoint
    from four_d_vggt.models.model import FourDVGGT
    from four_d_vggt.utils.load_fn import load_and_preprocess_images

    return FourDVGGT, checkpoint_payload, load_checkpoint, load_and_preprocess_images


#: preprocessing inputs: name -> (H, W, channels)
LOAD_FN_IMAGES = {"4x3": (96, 128, 3), "16x9": (72, 128, 3), "portrait": (128, 96, 3), "up": (30, 40, 3),
                  "rgba": (30, 40, 4)}
LOAD_FN_TARGET = 56


def make_load_fn_fixture(load_fn, out: Path, seed: int) -> None:
    """Run the release's load_and_preprocess_images on seeded PNGs (see the module docstring)."""
    import tempfile

    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    tensors = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (h, w, c) in LOAD_FN_IMAGES.items():
            smooth = torch.nn.functional.interpolate(torch.rand(1, c, h // 6 + 2, w // 6 + 2, generator=g), size=(h, w),
                                                     mode="bilinear", align_corners=False)[0]
            img = (255 * (0.7 * smooth + 0.3 * torch.rand(c, h, w, generator=g))).round().clamp(0, 255).to(torch.uint8)
            img = img.permute(1, 2, 0).contiguous()
            path = Path(tmp) / f"{name}.png"
            Image.fromarray(img.numpy()).save(path)
            tensors[f"input.{name}"] = img
            for mode in ("crop", "pad"):
                x = load_fn([str(path)], mode=mode, target_size=LOAD_FN_TARGET)[0]
                u8 = (x * 255).round()
                assert torch.equal(u8 / 255, x), "load_fn output is not k / 255"
                tensors[f"{mode}.{name}"] = u8.to(torch.uint8).contiguous()
    save_file(tensors, str(out), metadata={"target_size": str(LOAD_FN_TARGET), "seed": str(seed),
                                           "release": "Haonan-Wang-aurora/4D-VGGT@f9c6efe"})


def default_count(FourDVGGT) -> tuple:
    """Parameters / tensors of the default FourDVGGT built on ``meta`` (DINOv2's drop-path schedule calls
    ``.item()`` on a linspace, so that one runs on the CPU)."""
    real = torch.linspace
    torch.linspace = lambda *a, **k: real(*a, **{**k, "device": "cpu"})
    try:
        with torch.device("meta"):
            m = FourDVGGT()
    finally:
        torch.linspace = real
    return sum(p.numel() for p in m.parameters()), len(m.state_dict())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("release", type=Path, help="checkout of the 4D-VGGT release (contains four_d_vggt/)")
    ap.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parents[1] / "test/data/model")
    ap.add_argument("--seed", type=int, default=4321)
    args = ap.parse_args()

    FourDVGGT, checkpoint_payload, load_checkpoint, load_fn = import_release(args.release)
    make_load_fn_fixture(load_fn, args.out_dir / "4dvggt_load_fn.safetensors", args.seed)
    n_default, t_default = default_count(FourDVGGT)
    torch.manual_seed(args.seed)
    model = FourDVGGT(**CONFIG).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("relative_time_bias"):
                p.copy_(3.0 * torch.randn_like(p))  # a signed bias per head and offset, logits-sized
            elif name.endswith("spatiotemporal_dense_fusion.alpha"):
                p.copy_(torch.tensor([2.0, -1.5, 2.5, 1.75]))
            elif ".temporal_blocks." in name and ".attn.qkv." in name:
                p.add_(0.3 * torch.randn_like(p))  # sharper window attention: each frame's slot matters
            else:
                p.add_((0.5 if name.endswith("gamma") else 0.08) * torch.randn_like(p))
            p.copy_(p.half().float())
    images_u8 = torch.randint(0, 256, (FRAMES, 3, HEIGHT, WIDTH), dtype=torch.uint8)
    with torch.no_grad():
        out = model(images_u8.float() / 255)

    payload = checkpoint_payload(model)
    payload["model"] = {k: v.detach().half().contiguous() for k, v in payload["model"].items()}
    # the release's own strict loader accepts the file
    check = FourDVGGT(**payload["model_config"])
    report = load_checkpoint(check, payload)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = args.out_dir / "4dvggt_small.pt"
    torch.save(payload, ckpt)

    tensors = {"input.images_u8": images_u8.contiguous()}
    for k, v in out.items():
        if k == "images":
            continue
        if isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                tensors[f"output.{k}.{i}"] = x.detach().float().clone()
        else:
            tensors[f"output.{k}"] = v.detach().float().clone()
    io = args.out_dir / "4dvggt_small_io.safetensors"
    save_file(tensors, str(io), metadata={
        "config": json.dumps(CONFIG), "seed": str(args.seed), "release": "Haonan-Wang-aurora/4D-VGGT@f9c6efe",
        "default_param_count": str(n_default), "default_tensor_count": str(t_default),
    })
    print(json.dumps({
        "checkpoint": str(ckpt), "checkpoint_bytes": ckpt.stat().st_size, "io": str(io), "io_bytes": io.stat().st_size,
        "params": sum(p.numel() for p in model.parameters()), "tensors": len(payload["model"]),
        "release_load": report, "default_param_count": n_default, "default_tensor_count": t_default,
        "parameter_report": model.parameter_report,
    }, indent=1))


if __name__ == "__main__":
    main()
