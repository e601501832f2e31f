"""``vggt4d-train``: train / fine-tune the model on synthetic dynamic multi-camera windows.

    vggt4d-train [--config config/train/tiny.yaml] [--out DIR] [--steps N] [--batch-size B] [--lr LR]
                 [--seed N] [--device cpu|cuda|auto] [--threads N] [--resume DIR] [--init CKPT]
                 [--trainable PATTERN ...] [--max-wall-min M] [--checkpoint-every N] [--no-progress]

Settings come from the YAML (``config/train/*.yaml``); flags override them. ``--resume DIR`` continues a
run from ``DIR`` (``model.safetensors`` + ``state.pt``, as written to ``<out>/last``); ``--init CKPT`` (or the YAML's
``init:``) loads a full checkpoint (e.g. VGGT-1B, or the previous stage of a two-stage recipe) before training; ``--trainable`` selects what trains (PAGE-4D-style partial
fine-tuning, e.g. ``aggregator.frame_blocks.10-19 aggregator.global_blocks.10-19 camera_head mask_head``),
everything else is frozen. Output: ``<out>/log.jsonl`` (one JSON object per step), ``<out>/last/`` checkpoint,
``<out>/config.json`` (resolved settings),
``<out>/snapshots/step-<N>.safetensors`` every ``snapshot_every`` steps (YAML) for checkpoint selection. Exit status 0 on success, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from ..cli_util import strip_ros_args


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"vggt4d-train: error: {message}\n")


def default_config_path() -> Path:
    return Path(__file__).resolve().parents[2] / "config" / "train" / "tiny.yaml"


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="vggt4d-train", description="Train the vggt4d_ros model on synthetic windows.")
    p.add_argument("--config", default=None, help="training YAML (default config/train/tiny.yaml)")
    p.add_argument("--out", default="runs/train", help="output directory (log, checkpoints)")
    p.add_argument("--steps", type=int, default=None, help="total optimisation steps")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, help="cpu | cuda | auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--resume", default=None, help="checkpoint directory to continue from")
    p.add_argument("--init", default=None, help="full checkpoint loaded before training (safetensors / .pt)")
    p.add_argument("--trainable", nargs="*", default=None, help="parameter patterns that train (rest frozen)")
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--max-wall-min", type=float, default=0.0, help="stop after this many minutes (0: no limit)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    return p


def resolve_settings(args: argparse.Namespace) -> Dict[str, Any]:
    """YAML settings with command-line overrides applied."""
    path = Path(args.config) if args.config else default_config_path()
    with open(path, "r", encoding="utf-8") as f:
        cfg = yaml.safe_load(f) or {}
    for key, val in (("steps", args.steps), ("batch_size", args.batch_size), ("seed", args.seed),
                     ("device", args.device), ("threads", args.threads), ("checkpoint_every", args.checkpoint_every)):
        if val is not None:
            cfg[key] = val
    if args.lr is not None:
        cfg.setdefault("optim", {})["lr"] = args.lr
    if args.trainable is not None:
        cfg["trainable"] = list(args.trainable)
    cfg.setdefault("model", "tiny")
    cfg.setdefault("seed", 0)
    cfg.setdefault("steps", 1000)
    cfg.setdefault("batch_size", 1)
    cfg.setdefault("device", "cpu")
    cfg["config_path"] = str(path)
    return cfg


def _is_fourd(model) -> bool:
    from ..model.fourd_vggt import FourDVGGT

    return isinstance(model, FourDVGGT)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(strip_ros_args(argv))
    try:
        cfg = resolve_settings(args)
    except (OSError, yaml.YAMLError) as exc:
        print(f"vggt4d-train: error: {exc}", file=sys.stderr)
        return 2

    import torch

    from ..model import load_checkpoint
    from ..model.configs import build_model_from_config
    from ..training.data import Prefetcher, WindowConfig, WindowSampler
    from ..training.losses import LossConfig
    from ..training.trainer import OptimConfig, Trainer, apply_trainable, seed_everything

    try:
        data_cfg = WindowConfig.from_dict(cfg.get("data"))
        loss_cfg = LossConfig.from_dict(cfg.get("loss"))
        optim_cfg = OptimConfig.from_dict(cfg.get("optim"))
    except (TypeError, ValueError) as exc:
        print(f"vggt4d-train: error: {exc}", file=sys.stderr)
        return 2
    device = cfg["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    seed = int(cfg["seed"])
    seed_everything(seed)
    model = build_model_from_config(cfg["model"])
    init = args.init or cfg.get("init")
    if init and not args.resume:
        from ..model.checkpoint import read_checkpoint

        src = read_checkpoint(Path(init))[0] if _is_fourd(model) else None
        if src is not None and any(k.startswith("aggregator.") for k in src):
            # A VGGT-layout checkpoint (e.g. the embedded tiny) warm-starts the 4D-VGGT architecture through
            # the transplant: same tensors under the release's names, cross-time branch = global branch.
            from ..training.transplant import transplant_to_fourd

            filled, unused = transplant_to_fourd(model, src)
            print(f"init from {init}: transplanted onto {cfg['model']} (VGGT layout -> 4D-VGGT names), "
                  f"{len(filled)} tensors initialised by the transplant, {len(unused)} unused", file=sys.stderr)
        else:
            rep = load_checkpoint(model, init, strict=False)
            print(f"init from {init}: layout {rep.layout}, missing {len(rep.missing)}, unexpected "
                  f"{len(rep.unexpected)}, mismatched {len(rep.mismatched)}", file=sys.stderr)
    try:
        counts = apply_trainable(model, cfg.get("trainable"))
    except ValueError as exc:
        print(f"vggt4d-train: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = dict(cfg, argv=list(sys.argv if argv is None else argv), params=counts)
    (out / "config.json").write_text(json.dumps(settings, indent=2, default=str))
    trainer = Trainer(model, loss_cfg, optim_cfg, total_steps=int(cfg["steps"]), device=device, extra_state=settings)
    if args.resume:
        trainer.resume(args.resume)
        print(f"resumed at step {trainer.step} from {args.resume}", file=sys.stderr)
    sampler = WindowSampler(data_cfg, int(cfg["batch_size"]), seed=seed)
    batches = Prefetcher(sampler, start_step=trainer.step)
    print(f"training {cfg['model']}: {counts['trainable']:,} trainable / {counts['frozen']:,} frozen parameters, "
          f"{cfg['steps']} steps, batch {cfg['batch_size']}, device {device}", file=sys.stderr)
    t0 = time.time()
    try:
        logs = trainer.fit(batches, int(cfg["steps"]), out_dir=out, checkpoint_every=int(cfg.get("checkpoint_every", 0) or 0),
                           progress=not args.no_progress, max_wall_s=60.0 * args.max_wall_min,
                           snapshot_every=int(cfg.get("snapshot_every", 0) or 0))
    finally:
        batches.close()
    print(json.dumps({"step": trainer.step, "wall_s": round(time.time() - t0, 1), "loss": logs.get("loss"),
                      "checkpoint": str(out / "last")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
