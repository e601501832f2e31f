"""The training loop: AdamW + warmup/cosine schedule, gradient clipping, partial fine-tuning, checkpoints.

Checkpoint directory layout (``save`` / ``resume``)::

    <dir>/model.safetensors   full model weights (readable by vggt4d_ros.model.load_checkpoint)
    <dir>/state.pt            optimizer / scheduler / step / config (torch.load(weights_only=True) safe)
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import random
import re
import time
from dataclasses import dataclass, field, asdict
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .losses import LossConfig, multitask_loss

WEIGHTS = "model.safetensors"
STATE = "state.pt"


@dataclass
class OptimConfig:
    """Optimiser and schedule settings."""

    lr: float = 3e-4
    weight_decay: float = 0.05
    betas: tuple = (0.9, 0.95)
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0

    @classmethod
    def from_dict(cls, d: Optional[Dict[str, Any]]) -> "OptimConfig":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown optimiser settings {sorted(unknown)}")
        if "betas" in d:
            d["betas"] = tuple(float(b) for b in d["betas"])
        return cls(**d)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


_RANGE = re.compile(r"^(.*?)(\d+)-(\d+)$")


def expand_pattern(pattern: str) -> List[str]:
    """``"aggregator.frame_blocks.10-19"`` -> prefixes ``aggregator.frame_blocks.10`` .. ``.19``; else itself."""
    m = _RANGE.match(pattern)
    if not m:
        return [pattern]
    head, a, b = m.group(1), int(m.group(2)), int(m.group(3))
    return [f"{head}{i}" for i in range(min(a, b), max(a, b) + 1)]


def matches(name: str, patterns: Sequence[str]) -> bool:
    """Whether parameter ``name`` is selected by any pattern (module prefix, numeric range or glob)."""
    for pat in patterns:
        for p in expand_pattern(pat):
            if any(ch in p for ch in "*?["):
                if fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name, p + ".*"):
                    return True
            elif name == p or name.startswith(p + "."):
                return True
    return False


def apply_trainable(model: nn.Module, patterns: Optional[Sequence[str]]) -> Dict[str, int]:
    """Freeze every parameter not matched by ``patterns`` (None or empty: everything trains).

    Returns ``{"trainable": n, "frozen": n}`` parameter counts. Raises ``ValueError`` for a pattern that
    matches nothing (a typo would otherwise silently freeze the whole model). A pattern that names a preset of
    the model's ``trainable_patterns`` (e.g. ``"page4d_middle"``: PAGE-4D's partial fine-tune) stands for its
    patterns; a single string is one pattern.
    """
    patterns = [patterns] if isinstance(patterns, str) else list(patterns or [])
    preset = getattr(model, "trainable_patterns", None)
    if callable(preset):
        patterns = [q for p in patterns if p for q in (preset(p) or [p])]
    patterns = [p for p in patterns if p]
    if patterns:
        names = [n for n, _ in model.named_parameters()]
        dead = [p for p in patterns if not any(matches(n, [p]) for n in names)]
        if dead:
            raise ValueError(f"trainable patterns match no parameter: {dead}")
    counts = {"trainable": 0, "frozen": 0}
    for name, p in model.named_parameters():
        on = not patterns or matches(name, patterns)
        p.requires_grad_(on)
        counts["trainable" if on else "frozen"] += p.numel()
    return counts


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup to 1 over ``warmup`` steps, then cosine decay to ``min_ratio`` at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    prog = min(max(step - warmup, 0) / span, 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * prog))


def _to(batch: Dict[str, torch.Tensor], device: torch.device) -> Dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


class Trainer:
    """Owns the model, optimiser, schedule and step counter.

    Args:
        model: the :class:`~vggt4d_ros.model.VGGT4D` (trainable flags already set, see :func:`apply_trainable`).
        loss_cfg, optim_cfg: loss and optimiser settings.
        total_steps: schedule length.
        device: torch device.
        extra_state: JSON-able settings stored in ``state.pt`` (command, data settings...).
    """

    def __init__(self, model: nn.Module, loss_cfg: LossConfig, optim_cfg: OptimConfig, total_steps: int,
                 device: Any = "cpu", extra_state: Optional[Dict[str, Any]] = None) -> None:
        self.model = model.to(device)
        self.device = torch.device(device)
        self.loss_cfg = loss_cfg
        self.optim_cfg = optim_cfg
        self.total_steps = int(total_steps)
        self.step = 0
        self.extra_state = dict(extra_state or {})
        params = [p for p in model.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": optim_cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=optim_cfg.lr,
                                           betas=tuple(optim_cfg.betas))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, optim_cfg.warmup_steps, self.total_steps, optim_cfg.min_lr_ratio))

    def forward_loss(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Run the model on a batch and return the loss terms."""
        b = _to(batch, self.device)
        V = int(b["num_views"][0])
        queries = b["query_points"] if self.loss_cfg.track > 0 and getattr(self.model, "track_head", None) is not None else None
        out = self.model(b["images"], queries, num_views=V, reference_index=0)
        return multitask_loss(out, b, self.loss_cfg)

    def train_step(self, batch: Dict[str, torch.Tensor]) -> Dict[str, float]:
        """One optimisation step; returns the float loss terms plus ``lr`` and ``grad_norm``."""
        self.model.train()
        terms = self.forward_loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        params = [p for p in self.model.parameters() if p.requires_grad]
        gn = torch.nn.utils.clip_grad_norm_(params, self.optim_cfg.grad_clip if self.optim_cfg.grad_clip > 0 else float("inf"))
        lr = self.optimizer.param_groups[0]["lr"]
        if torch.isfinite(gn):
            self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        logs = {k: float(v.detach()) for k, v in terms.items()}
        logs.update(lr=lr, grad_norm=float(gn), step=self.step)
        return logs

    # ---- checkpoints ------------------------------------------------------------------------------
    def save(self, directory: os.PathLike) -> Path:
        """Write ``model.safetensors`` and ``state.pt`` into ``directory`` (atomically per file)."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        tmp = d / (WEIGHTS + ".tmp")
        save_file(sd, str(tmp), metadata={"step": str(self.step)})
        os.replace(tmp, d / WEIGHTS)
        state = {
            "step": self.step,
            "total_steps": self.total_steps,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "extra": json.dumps(self.extra_state),
        }
        tmp = d / (STATE + ".tmp")
        torch.save(state, str(tmp))
        os.replace(tmp, d / STATE)
        return d

    def save_weights(self, path: os.PathLike) -> Path:
        """Write the model weights alone to ``path`` (safetensors, atomically)."""
        from safetensors.torch import save_file

        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        tmp = p.with_name(p.name + ".tmp")
        save_file(sd, str(tmp), metadata={"step": str(self.step)})
        os.replace(tmp, p)
        return p

    def resume(self, directory: os.PathLike) -> int:
        """Load weights and optimiser/scheduler/step from ``directory``; returns the step."""
        from safetensors.torch import load_file

        d = Path(directory)
        sd = load_file(str(d / WEIGHTS), device="cpu")
        self.model.load_state_dict(sd, strict=True)
        state = torch.load(str(d / STATE), map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
        return self.step

    # ---- loop -------------------------------------------------------------------------------------
    def fit(self, batches: Iterator[Dict[str, torch.Tensor]], steps: int, out_dir: Optional[os.PathLike] = None,
            checkpoint_every: int = 0, log_every: int = 1, progress: bool = True,
            callback: Optional[Callable[["Trainer", Dict[str, float]], None]] = None,
            max_wall_s: float = 0.0, snapshot_every: int = 0) -> Dict[str, float]:
        """Train until ``self.step == steps`` (or ``max_wall_s`` elapsed); JSON-lines log in ``out_dir/log.jsonl``.

        Checkpoints go to ``out_dir/last`` every ``checkpoint_every`` steps and at the end; with
        ``snapshot_every`` the weights alone are also kept as ``out_dir/snapshots/step-<N>.safetensors`` (for
        checkpoint selection on held-out data afterwards).
        """
        log_f = None
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            log_f = open(Path(out_dir) / "log.jsonl", "a", encoding="utf-8")
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=steps, initial=self.step, dynamic_ncols=True, mininterval=5.0)
        t0 = time.time()
        logs: Dict[str, float] = {}
        try:
            while self.step < steps:
                ts = time.time()
                batch = next(batches)
                tw = time.time()
                logs = self.train_step(batch)
                logs.update(data_s=tw - ts, step_s=time.time() - tw, wall_s=time.time() - t0)
                if log_f is not None and (self.step % log_every == 0 or self.step == steps):
                    log_f.write(json.dumps(logs) + "\n")
                    log_f.flush()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{logs['loss']:.3f}", lr=f"{logs['lr']:.1e}")
                if callback is not None:
                    callback(self, logs)
                if out_dir is not None and checkpoint_every and self.step % checkpoint_every == 0:
                    self.save(Path(out_dir) / "last")
                if out_dir is not None and snapshot_every and self.step % snapshot_every == 0:
                    self.save_weights(Path(out_dir) / "snapshots" / f"step-{self.step:06d}.safetensors")
                if max_wall_s and time.time() - t0 > max_wall_s:
                    break
        finally:
            if bar is not None:
                bar.close()
            if log_f is not None:
                log_f.close()
        if out_dir is not None:
            self.save(Path(out_dir) / "last")
        return logs
