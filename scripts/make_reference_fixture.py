#!/usr/bin/env python3
"""Dev-only: make ``test/data/model/reference_small.safetensors`` from the REFERENCE VGGT implementation.

Usage::

    python scripts/make_reference_fixture.py /path/to/vggt-checkout [--out test/data/model/reference_small.safetensors]

The reference is imported from the given checkout (never copied into this project). The script builds a
small VGGT (conv patch embed, embed_dim 64, depth 4, small heads) out of the reference's own classes, gives
every parameter seeded random values that are exactly representable in fp16 (so the file stores them as
fp16 at half the size and they load into fp32 unchanged), runs it in fp32 on fixed random frames (S=3) and
query points, and saves: ``model.<key>`` (state_dict), ``input.images`` / ``input.query_points``,
``output.<name>`` (every output; ``output.pose_enc_list.<i>``), plus the matching ``build_model`` settings
as JSON in the metadata (``build_model``). ``test/test_model_reference.py`` loads it into this project's
``build_model`` and compares.

Needs ``einops`` for the reference's track modules (install it into a throw-away target dir and put that
on PYTHONPATH); ``huggingface_hub`` is stubbed here if missing (the reference only uses it as a mixin).
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

#: the settings of the small model, in this project's ``build_model`` vocabulary.
BUILD = {
    "img_size": 56,
    "patch_size": 14,
    "embed_dim": 64,
    "depth": 4,
    "num_heads": 4,
    "patch_embed": "conv",
    "dpt_layers": [0, 1, 2, 3],
    "camera_head": {"trunk_depth": 1, "num_heads": 4},
    "dpt": {"features": 16, "out_channels": [8, 16, 16, 16]},
    "track": {
        "features": 16,
        "hidden_size": 32,
        "corr_levels": 3,
        "corr_radius": 2,
        "out_channels": [8, 16, 16, 16],
        "tracker_depth": 1,
        "num_heads": 8,
        "num_virtual_tracks": 64,
    },
    "keep_layers": None,
}
FRAMES, HEIGHT, WIDTH = 3, 56, 70


def import_reference(root: Path):
    sys.path.insert(0, str(root))
    if "huggingface_hub" not in sys.modules:
        try:
            import huggingface_hub  # noqa: F401
        except ImportError:
            stub = types.ModuleType("huggingface_hub")
            stub.PyTorchModelHubMixin = type("PyTorchModelHubMixin", (), {})
            sys.modules["huggingface_hub"] = stub
    from vggt.heads.camera_head import CameraHead
    from vggt.heads.dpt_head import DPTHead
    from vggt.heads.track_head import TrackHead
    from vggt.heads.track_modules.base_track_predictor import BaseTrackerPredictor
    from vggt.models.aggregator import Aggregator
    from vggt.models.vggt import VGGT

    return VGGT, Aggregator, CameraHead, DPTHead, TrackHead, BaseTrackerPredictor


def build_reference(root: Path) -> torch.nn.Module:
    VGGT, Aggregator, CameraHead, DPTHead, TrackHead, Tracker = import_reference(root)
    b = BUILD
    dim_in = 2 * b["embed_dim"]
    dpt = dict(features=b["dpt"]["features"], out_channels=b["dpt"]["out_channels"], intermediate_layer_idx=b["dpt_layers"])
    model = VGGT.__new__(VGGT)
    torch.nn.Module.__init__(model)
    model.aggregator = Aggregator(
        img_size=b["img_size"], patch_size=b["patch_size"], embed_dim=b["embed_dim"], depth=b["depth"],
        num_heads=b["num_heads"], patch_embed="conv",
    )
    model.camera_head = CameraHead(dim_in=dim_in, **b["camera_head"])
    model.point_head = DPTHead(dim_in=dim_in, output_dim=4, activation="inv_log", conf_activation="expp1", **dpt)
    model.depth_head = DPTHead(dim_in=dim_in, output_dim=2, activation="exp", conf_activation="expp1", **dpt)
    t = b["track"]
    track = TrackHead(dim_in=dim_in, patch_size=b["patch_size"], features=t["features"], corr_levels=t["corr_levels"],
                      corr_radius=t["corr_radius"], hidden_size=t["hidden_size"])
    track.feature_extractor = DPTHead(
        dim_in=dim_in, patch_size=b["patch_size"], features=t["features"], out_channels=t["out_channels"],
        intermediate_layer_idx=b["dpt_layers"], feature_only=True, down_ratio=2, pos_embed=False,
    )
    track.tracker = Tracker(stride=2, corr_levels=t["corr_levels"], corr_radius=t["corr_radius"],
                            latent_dim=t["features"], hidden_size=t["hidden_size"], depth=t["tracker_depth"])
    model.track_head = track
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reference", type=Path, help="checkout of the reference VGGT (contains vggt/)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "test/data/model/reference_small.safetensors")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    model = build_reference(args.reference).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.5 if name.endswith("gamma") else 0.08
            if name.startswith("track_head.tracker."):
                # the iterative tracker amplifies float rounding (summation order) by ~30x per iteration
                # under large random weights; near its own init it is well conditioned.
                scale = 0.01
            p.add_(scale * torch.randn_like(p))
            p.copy_(p.half().float())
    images = torch.rand(FRAMES, 3, HEIGHT, WIDTH)
    queries = torch.tensor([[10.0, 12.0], [35.5, 20.25], [60.0, 44.0]])
    with torch.no_grad():
        out = model(images, query_points=queries)

    tensors = {f"model.{k}": v.detach().half().contiguous() for k, v in model.state_dict().items()}
    tensors["input.images"] = images.contiguous()
    tensors["input.query_points"] = queries.contiguous()
    for k, v in out.items():
        if k == "images":
            continue
        if isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                tensors[f"output.{k}.{i}"] = x.detach().float().clone()
        else:
            tensors[f"output.{k}"] = v.detach().float().clone()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out), metadata={"build_model": json.dumps(BUILD), "seed": str(args.seed)})
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, {len(tensors)} tensors)")


if __name__ == "__main__":
    main()
