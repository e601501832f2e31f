"""Procedural, seamlessly tiling textures with mip levels, sampled with OpenCV's ``remap``.

Every material is a square RGB tile that repeats every ``tile_m`` metres of surface coordinate. A tile
mixes multi-scale (1/f) noise, a colour palette, and one structured pattern (checkers, stripes, colour
patches, bricks, plain noise; with ``kinds`` also wood rings, a grid of lines, a nearly textureless
gradient, dots and marble veins), so surfaces carry detail a matcher can lock on (or, for ``gradient``,
almost none).
A second, low-frequency "stain" tile with a different period modulates brightness so the repetition of
a tile is not visible on large walls.

All tiles of a mip level live in one vertical atlas with a wrap-padded border, so one ``cv2.remap`` call
samples any mix of materials bilinearly; mip levels are blended per pixel (trilinear filtering) from the
pixel footprint, which keeps distant surfaces free of aliasing. OpenCV's remap does the bilinear sampling
(C++ speed); only the atlas layout and mip selection are written here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import cv2
import numpy as np

PAD = 2  # wrap-padding in texels around each tile in the atlas
PATTERNS = ("noise", "checkers", "stripes", "patches", "bricks")  # the default bank (demo, tests)
#: every pattern :func:`make_tile` can draw (``kinds``); the training data picks a subset per family
ALL_PATTERNS = PATTERNS + ("wood", "grid", "gradient", "dots", "marble")


def periodic_noise(rng: np.random.Generator, size: int, beta: float, channels: int = 1) -> np.ndarray:
    """Seamless 1/f^beta noise on a (size, size) torus, normalised to zero mean and unit std.

    Returns (size, size, channels) float32.
    """
    f = np.fft.fftfreq(size)
    fr = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    fr[0, 0] = 1.0
    filt = fr ** (-beta / 1.0)
    filt[0, 0] = 0.0
    white = rng.normal(size=(channels, size, size))
    out = np.fft.ifft2(np.fft.fft2(white) * filt).real
    out = (out - out.mean(axis=(1, 2), keepdims=True)) / (out.std(axis=(1, 2), keepdims=True) + 1e-9)
    return np.moveaxis(out, 0, -1).astype(np.float32)


def _pattern(rng: np.random.Generator, kind: str, size: int, palette: np.ndarray) -> np.ndarray:
    """A periodic structured pattern coloured from ``palette`` (K, 3): (size, size, 3) float32 in [0, 1]."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size  # [0, 1) tile coordinates
    if kind == "checkers":
        n = int(rng.choice([4, 6, 8, 12]))
        idx = ((np.floor(x * n) + np.floor(y * n)) % 2).astype(int)
        return palette[idx]
    if kind == "stripes":
        n = int(rng.choice([5, 8, 13, 21]))
        kx, ky = rng.integers(0, 3, 2)
        kx = max(int(kx), 1)
        phase = (x * kx + y * int(ky)) * n
        idx = (np.floor(phase) % len(palette)).astype(int)
        return palette[idx]
    if kind == "bricks":
        rows = int(rng.choice([8, 12, 16]))
        cols = rows // 2
        r = np.floor(y * rows)
        xs = x * cols + 0.5 * (r % 2)
        mortar = (np.abs(y * rows - np.round(y * rows)) < 0.06) | (np.abs(xs - np.round(xs)) < 0.03)
        brick_id = (r * 131 + np.floor(xs) * 17).astype(int) % len(palette)
        out = palette[brick_id]
        out[mortar] = 0.85
        return out
    if kind == "wood":
        # concentric rings around an off-tile centre, warped by noise (periodic: distance on the torus)
        n = int(rng.choice([3, 5, 8]))
        cx, cy = rng.uniform(0, 1, 2)
        dx = np.minimum(np.abs(x - cx), 1 - np.abs(x - cx))
        dy = np.minimum(np.abs(y - cy), 1 - np.abs(y - cy))
        warp = 0.04 * periodic_noise(rng, size, 2.0)[..., 0]
        r = np.sqrt(dx ** 2 + (0.3 * dy) ** 2) + warp
        t = 0.5 + 0.5 * np.sin(2 * np.pi * n * 4 * r)
        return (1 - t)[..., None] * palette[0] + t[..., None] * palette[1]
    if kind == "grid":
        n = int(rng.choice([4, 8, 16]))
        width = float(rng.uniform(0.03, 0.12))
        line = (np.abs(x * n - np.round(x * n)) < width) | (np.abs(y * n - np.round(y * n)) < width)
        out = np.broadcast_to(palette[0], (size, size, 3)).copy()
        out[line] = palette[1]
        return out
    if kind == "gradient":
        # low texture: a smooth periodic colour ramp (the grain added by make_tile stays faint)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (x + rng.uniform()) ) * np.cos(2 * np.pi * (y + rng.uniform()))
        return (1 - t)[..., None] * palette[0] + t[..., None] * palette[1]
    if kind == "dots":
        n = int(rng.integers(30, 90))
        centres = rng.uniform(0, 1, (n, 2)).astype(np.float32)
        radii = rng.uniform(0.015, 0.06, n).astype(np.float32)
        out = np.broadcast_to(palette[0], (size, size, 3)).copy()
        for k in range(n):
            dx = np.abs(x - centres[k, 0])
            dy = np.abs(y - centres[k, 1])
            d = np.minimum(dx, 1 - dx) ** 2 + np.minimum(dy, 1 - dy) ** 2
            out[d < radii[k] ** 2] = palette[1 + k % (len(palette) - 1)]
        return out
    if kind == "marble":
        g = periodic_noise(rng, size, 1.8)[..., 0]
        k = int(rng.integers(1, 4))
        t = np.abs(np.sin(2 * np.pi * (k * x + 0.35 * g)))
        t = t ** 0.3
        return (1 - t)[..., None] * palette[2] + t[..., None] * palette[0]
    if kind == "patches":
        # periodic Voronoi cells with random colours
        n = int(rng.integers(24, 48))
        seeds = rng.uniform(0, 1, (n, 2)).astype(np.float32)
        colours = rng.uniform(0.1, 0.95, (n, 3)).astype(np.float32)
        best = np.full((size, size), np.inf, np.float32)
        label = np.zeros((size, size), np.int64)
        for k in range(n):  # n cells, each a vectorised full-tile pass
            dx = np.abs(x - seeds[k, 0])
            dy = np.abs(y - seeds[k, 1])
            d = np.minimum(dx, 1 - dx) ** 2 + np.minimum(dy, 1 - dy) ** 2
            closer = d < best
            best[closer] = d[closer]
            label[closer] = k
        return colours[label]
    # plain noise: a colour ramp over a noise field
    g = periodic_noise(rng, size, 1.6)[..., 0]
    t = np.clip(0.5 + 0.25 * g, 0, 1)
    return (1 - t)[..., None] * palette[0] + t[..., None] * palette[1]


def make_tile(rng: np.random.Generator, size: int, kinds: Optional[Sequence[str]] = None) -> np.ndarray:
    """One material tile: (size, size, 3) uint8 RGB, periodic in both axes; its pattern is drawn from
    ``kinds`` (names of :data:`ALL_PATTERNS`; default :data:`PATTERNS`)."""
    kinds = tuple(kinds) if kinds else PATTERNS
    palette = rng.uniform(0.05, 0.95, (4, 3)).astype(np.float32)
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind not in ALL_PATTERNS:
        raise ValueError(f"unknown texture pattern {kind!r}; known: {list(ALL_PATTERNS)}")
    base = _pattern(rng, kind, size, palette)
    fine = periodic_noise(rng, size, 0.9, 1)  # high-frequency luminance grain
    mid = periodic_noise(rng, size, 1.5, 3)  # mid-scale colour variation
    grain = 0.04 if kind == "gradient" else 0.18
    img = base * (1.0 + grain * fine) + (0.02 if kind == "gradient" else 0.07) * mid
    return np.clip(img * 255.0, 0, 255).astype(np.uint8)


def remap_points(img: np.ndarray, mx: np.ndarray, my: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``img`` at (N,) float32 positions: (N,) or (N, C) float32.

    ``cv2.remap`` needs maps below 32767 rows/cols, so the point list is folded into a 2D map.
    """
    n = mx.shape[0]
    cols = 1024
    rows = -(-n // cols)
    pad = rows * cols - n
    fx = np.pad(mx.astype(np.float32), (0, pad)).reshape(rows, cols)
    fy = np.pad(my.astype(np.float32), (0, pad)).reshape(rows, cols)
    out = cv2.remap(img, fx, fy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    out = out.reshape(rows * cols, -1)[:n].astype(np.float32)
    return out if img.ndim == 3 else out[:, 0]


def _atlas(tiles: List[np.ndarray]) -> np.ndarray:
    """Stack wrap-padded tiles vertically: (n * (s + 2 PAD), s + 2 PAD, C)."""
    return np.concatenate([np.pad(t, ((PAD, PAD), (PAD, PAD), (0, 0)), mode="wrap") for t in tiles], axis=0)


@dataclass
class TextureBank:
    """Mip-mapped atlases of all materials plus a brightness stain tile.

    ``levels[l]`` is the atlas of mip level ``l`` (tile size ``tile_px >> l``), uint8 (rows, cols, 3).
    """

    levels: List[np.ndarray]
    tile_px: int
    tile_m: float
    stain: np.ndarray  # (stain_px + 2 PAD, stain_px + 2 PAD) float32, mean 1
    stain_m: float
    num_materials: int

    @classmethod
    def generate(cls, rng: np.random.Generator, num_materials: int, tile_px: int = 512, tile_m: float = 2.0,
                 num_levels: int = 6, stain_m: float = 7.3, kinds: Optional[Sequence[str]] = None) -> "TextureBank":
        """Create ``num_materials`` random tiles (patterns drawn from ``kinds``, default :data:`PATTERNS`)
        with ``num_levels`` mip levels."""
        tiles = [make_tile(rng, tile_px, kinds) for _ in range(num_materials)]
        levels = [_atlas(tiles)]
        for _ in range(1, num_levels):
            tiles = [cv2.resize(t, (t.shape[1] // 2, t.shape[0] // 2), interpolation=cv2.INTER_AREA)
                     for t in tiles]
            levels.append(_atlas(tiles))
        stain_px = 128
        stain = 1.0 + 0.22 * np.clip(periodic_noise(rng, stain_px, 2.0)[..., 0], -2.5, 2.5)
        stain = np.pad(stain, PAD, mode="wrap").astype(np.float32)
        return cls(levels, tile_px, tile_m, stain, stain_m, num_materials)

    def sample(self, material: np.ndarray, s: np.ndarray, t: np.ndarray, footprint_m: np.ndarray) -> np.ndarray:
        """Trilinearly filtered colour of surface points.

        Args:
            material: (N,) int material index per point.
            s, t: (N,) surface coordinates in metres.
            footprint_m: (N,) size of the pixel's footprint on the surface, metres.
        Returns:
            (N, 3) float32 RGB in [0, 255], modulated by the stain.
        """
        n = material.shape[0]
        out = np.zeros((n, 3), np.float32)
        if n == 0:
            return out
        u = np.mod(s / self.tile_m, 1.0)
        v = np.mod(t / self.tile_m, 1.0)
        texel_m = self.tile_m / self.tile_px
        lod = np.clip(np.log2(np.maximum(footprint_m / texel_m, 1.0)), 0, len(self.levels) - 1)
        lo = np.minimum(np.floor(lod).astype(np.int64), len(self.levels) - 2) if len(self.levels) > 1 \
            else np.zeros(n, np.int64)
        frac = (lod - lo).astype(np.float32)
        for level in np.unique(lo):
            sel = np.nonzero(lo == level)[0]
            acc = None
            for k, weight in ((level, 1.0 - frac[sel]), (level + 1, frac[sel])):
                if k >= len(self.levels):
                    continue
                size = self.tile_px >> k
                mx = (u[sel] * size + PAD - 0.5).astype(np.float32)
                my = (v[sel] * size + PAD - 0.5 + material[sel] * (size + 2 * PAD)).astype(np.float32)
                smp = remap_points(self.levels[k], mx, my)
                acc = smp * weight[:, None] if acc is None else acc + smp * weight[:, None]
            out[sel] = acc
        spx = self.stain.shape[0] - 2 * PAD
        sx = (np.mod(s / self.stain_m, 1.0) * spx + PAD - 0.5).astype(np.float32)
        sy = (np.mod(t / self.stain_m, 1.0) * spx + PAD - 0.5).astype(np.float32)
        stain = remap_points(self.stain, sx, sy)
        return out * stain[:, None]
