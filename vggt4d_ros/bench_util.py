"""Small helpers shared by the ``bench/`` scripts: machine description and summary statistics.

No ROS import and no torch import at module level (the node benchmark's parent process never needs torch).
"""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

import numpy as np

__all__ = ["machine_info", "summarize", "git_commit", "rss_mib", "emit_json", "SHARED_MACHINE_NOTE"]

REPO = Path(__file__).resolve().parents[1]

SHARED_MACHINE_NOTE = (
    "measured on a machine shared with other engineers: other processes compete for the same CPU cores, "
    "so the load average at start is recorded and the median and min are more telling than the mean")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(torch_info: bool = True) -> Dict[str, Any]:
    """CPU model, logical cores, memory, load average (1, 5, 15 min), Python, platform; with ``torch_info``
    also the torch version, its thread count and the GPU (name, memory, CUDA version) if any."""
    mem_gib: Optional[float] = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    info: Dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "load_average_1_5_15_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if torch_info:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["gpu"] = None
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            info["gpu"] = {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                           "cuda": torch.version.cuda}
    return info


def summarize(values: Iterable[float], digits: int = 2) -> Dict[str, Optional[float]]:
    """``{n, min, mean, median, p95, max, std}`` of the finite values (None entries when there are none).

    p95 is numpy's linear-interpolation percentile; std is the population standard deviation (the jitter
    figure of the node benchmark).
    """
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {"n": 0, "min": None, "mean": None, "median": None, "p95": None, "max": None, "std": None}
    r = lambda x: round(float(x), digits)  # noqa: E731
    return {"n": int(a.size), "min": r(a.min()), "mean": r(a.mean()), "median": r(np.median(a)),
            "p95": r(np.percentile(a, 95)), "max": r(a.max()), "std": r(a.std())}


def git_commit() -> Optional[str]:
    """Short commit of the working tree (with ``+dirty`` when it has changes), or None outside git."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        return rev or None
    except (OSError, subprocess.SubprocessError):
        return None


def rss_mib(pid: Optional[int] = None) -> Optional[float]:
    """Current resident set size of a process (default: this one) in MiB, from ``/proc``; None elsewhere."""
    path = f"/proc/{pid or 'self'}/status"
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def emit_json(doc: Dict[str, Any], save: Optional[Any] = None) -> int:
    """Print a benchmark's JSON document and, with ``save`` (a path), write it there too; returns 0 (the
    scripts' exit code)."""
    import json

    text = json.dumps(doc, indent=2)
    print(text)
    if save:
        Path(save).parent.mkdir(parents=True, exist_ok=True)
        Path(save).write_text(text + "\n")
    return 0
