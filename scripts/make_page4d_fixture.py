#!/usr/bin/env python3
"""Dev-only: make ``test/data/model/page4d_small/`` from PAGE-4D's OWN implementation.

Usage::

    python scripts/make_page4d_fixture.py /path/to/PAGE4D-checkout [--out test/data/model/page4d_small]

PAGE-4D (github kaichen-z/PAGE4D, commit 9f4ef74) is imported from the given checkout (its ``model/`` folder
holds the ``page`` package); nothing of it is copied into this project. The script builds two small PAGE-4D
models out of PAGE-4D's own classes (``page.models.vggt.VGGT`` assembled like its constructor, with small
dimensions: conv patch embed, embed_dim 32, 2 heads (head_dim 16: PAGE-4D's biased attention pads the head
dimension to a multiple of 8 and is exact only when head_dim is one), depth 5, no track head as in its
training config) and scales PAGE-4D's hard-coded block lists to depth 5: mask predictor after frame block 1
(``temporal_list1_mask``, 9 in the full model), biased global blocks 2..3 (``temporal_list2``, 10..19), plain
blocks 0..1 and 4. Every parameter gets seeded random values exactly representable in fp16 (stored as fp16,
they load into fp32 unchanged); both models run in fp32 in eval mode on the same fixed frames:

- ``checkpoint_nomask.pt``: ``mask_hold_start = mask_hold_end = 0`` (PAGE-4D's eval scripts' ``--num_mask 0``
  and its Quick Start): the mask path is off, no attention bias;
- ``checkpoint_mask.pt``: ``mask_hold_start = mask_hold_end = 1`` (``--num_mask 1``): at step 0 the mask
  alpha is 1, the bias strength PAGE-4D's scale 64.

Each checkpoint is saved in PAGE-4D's trainer format (``{"model": state_dict, "prev_epoch", "steps",
"time_elapsed", "optimizer", "scaler", ...}``, as training/trainer_gra.py writes it). ``io.safetensors`` holds
``input.images``, ``<variant>.<output>`` (every output; ``pose_enc_list.<i>``) and ``<variant>.page_static``
(the mask predictor's static score, read from PAGE-4D's mask head by a forward hook), plus the matching
``build_model`` settings of each variant as JSON in the metadata. ``test/test_model_page4d_parity.py`` loads the
checkpoints with this project's ``load_checkpoint`` into ``config/models/page4d*.yaml`` scaled down and compares.

Needs ``einops`` (PAGE-4D's track modules import it; install it into a throw-away target dir and put that on
PYTHONPATH); ``huggingface_hub`` is stubbed here if missing (PAGE-4D only uses it as a mixin).
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

#: the small model, in this project's ``build_model`` vocabulary (strength per variant below)
BUILD = {
    "img_size": 56,
    "patch_size": 14,
    "embed_dim": 32,
    "depth": 5,
    "num_heads": 2,
    "patch_embed": "conv",
    "enable_track": False,
    "layout": "global",
    "dpt_layers": [0, 2, 3, 4],
    "camera_head": {"trunk_depth": 1, "num_heads": 2},
    "dpt": {"features": 8, "out_channels": [8, 8, 16, 16]},
    "keep_layers": None,
    "page4d": {"enabled": True, "mask_block": 1, "bias_blocks": [2, 3], "strength": 0.0, "mode": "page4d"},
}
#: PAGE-4D's block lists scaled to depth 5 (its Aggregator hard-codes them for depth 24)
LISTS = {"temporal_list1": [0, 1], "temporal_list1_mask": [1], "temporal_list2": [2, 3], "temporal_list3": [4]}
VARIANTS = {"nomask": (0, 0.0, 1234), "mask": (1, 64.0, 4321)}  # num_mask, strength, seed
FRAMES, HEIGHT, WIDTH = 3, 56, 70


def import_page4d(root: Path):
    sys.path.insert(0, str(root / "model"))
    if "huggingface_hub" not in sys.modules:
        try:
            import huggingface_hub  # noqa: F401
        except ImportError:
            stub = types.ModuleType("huggingface_hub")
            stub.PyTorchModelHubMixin = type("PyTorchModelHubMixin", (), {})
            sys.modules["huggingface_hub"] = stub
    from page.heads.camera_head import CameraHead
    from page.heads.dpt_head import DPTHead
    from page.models.aggregator import Aggregator
    from page.models.vggt import VGGT

    return VGGT, Aggregator, CameraHead, DPTHead


def build_page4d(root: Path, num_mask: int) -> torch.nn.Module:
    VGGT, Aggregator, CameraHead, DPTHead = import_page4d(root)
    b = BUILD
    dim_in = 2 * b["embed_dim"]
    dpt = dict(features=b["dpt"]["features"], out_channels=b["dpt"]["out_channels"], intermediate_layer_idx=b["dpt_layers"])
    model = VGGT.__new__(VGGT)
    torch.nn.Module.__init__(model)
    model.aggregator = Aggregator(img_size=b["img_size"], patch_size=b["patch_size"], embed_dim=b["embed_dim"],
                                  depth=b["depth"], num_heads=b["num_heads"], patch_embed="conv",
                                  mask_hold_start=num_mask, mask_hold_end=num_mask)
    for name, value in LISTS.items():
        setattr(model.aggregator, name, list(value))
    model.camera_head = CameraHead(dim_in=dim_in, **b["camera_head"])
    model.point_head = DPTHead(dim_in=dim_in, output_dim=4, activation="inv_log", conf_activation="expp1", **dpt)
    model.depth_head = DPTHead(dim_in=dim_in, output_dim=2, activation="exp", conf_activation="expp1", **dpt)
    model.track_head = None  # PAGE-4D trains with enable_track: false
    model.step = 0
    return model


def trainer_payload(model: torch.nn.Module, steps: int) -> dict:
    """PAGE-4D's trainer checkpoint layout (training/trainer_gra.py save_checkpoint + DDPCheckpointSaver)."""
    optim = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)
    return {
        "prev_epoch": 25,
        "steps": {"train": steps, "val": 0},
        "time_elapsed": 1234.5,
        "optimizer": optim.state_dict(),
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                   "_growth_tracker": 0},
        "ema_models": None,
        "skip_saving_parameters": [],
        "model": {k: v.detach().half().clone() for k, v in model.state_dict().items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("page4d", type=Path, help="checkout of PAGE-4D (contains model/page/)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "test/data/model/page4d_small")
    args = ap.parse_args()

    torch.manual_seed(0)
    images = torch.rand(FRAMES, 3, HEIGHT, WIDTH)
    tensors = {"input.images": images.contiguous()}
    meta = {}
    args.out.mkdir(parents=True, exist_ok=True)
    for variant, (num_mask, strength, seed) in VARIANTS.items():
        torch.manual_seed(seed)
        model = build_page4d(args.page4d, num_mask).eval()
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.add_((0.5 if name.endswith("gamma") else 0.08) * torch.randn_like(p))
                p.copy_(p.half().float())
        seen = {}

        def hook(_mod, _inp, out, seen=seen):
            key_vis = out[1]  # (B, 1, S*P): sigmoid(...) - 0.5 on patch keys, 0 on camera/register keys
            seen["key_vis"] = key_vis.detach().clone()

        handle = model.aggregator.spatial_mask_head.register_forward_hook(hook)
        with torch.no_grad():
            out = model(images)
        handle.remove()
        for k, v in out.items():
            if k == "images":
                continue
            if isinstance(v, (list, tuple)):
                for i, x in enumerate(v):
                    tensors[f"{variant}.{k}.{i}"] = x.detach().float().clone()
            else:
                tensors[f"{variant}.{k}"] = v.detach().float().clone()
        psi = model.aggregator.patch_start_idx
        grid = (HEIGHT // BUILD["patch_size"], WIDTH // BUILD["patch_size"])
        kv = seen["key_vis"].view(1, FRAMES, -1)[:, :, psi:]
        tensors[f"{variant}.page_static"] = (kv + 0.5).reshape(1, FRAMES, *grid).contiguous()
        build = json.loads(json.dumps(BUILD))
        build["page4d"]["strength"] = strength
        meta[f"build_model.{variant}"] = json.dumps(build)
        path = args.out / f"checkpoint_{variant}.pt"
        torch.save(trainer_payload(model, steps=12000 + num_mask), path)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    io = args.out / "io.safetensors"
    save_file(tensors, str(io), metadata=meta)
    print(f"wrote {io} ({io.stat().st_size / 1e6:.2f} MB, {len(tensors)} tensors)")


if __name__ == "__main__":
    main()
