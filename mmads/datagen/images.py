"""Procedural item images: small PNGs whose colour, texture and shape render the latent.

The same latent directions the words read drive the picture: the colour angle (dims 0, 1) sets
the hue, the tone (dim 2) the brightness, the pattern angle (dims 12, 13) the texture, the size
(dim 14) the object's scale; the category picks the shape family and dim 15 its roundness. Jitter
and pixel noise keep the rendering imperfect. Quality and clicks never enter an image.
"""

from __future__ import annotations

import colorsys
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

# colour-group angle (45-degree steps, see vocab.COLOUR) -> hue in degrees, piecewise linear
_ANGLE_ANCHORS = np.arange(0, 361, 45, dtype=float)
_HUE_ANCHORS = np.array([0, 28, 55, 120, 175, 220, 275, 320, 360], dtype=float)
_SHAPE_EXPONENT = (2.0, 4.0, 1.0, 2.0)  # ellipse, squircle, diamond, triangle-cut ellipse
PIXEL_NOISE = 6.0


def _angle(x: float, y: float) -> float:
    return float(np.degrees(np.arctan2(y, x)) % 360.0)


def _rgb(hue_deg: float, sat: float, val: float) -> np.ndarray:
    r, g, b = colorsys.hsv_to_rgb((hue_deg % 360.0) / 360.0, float(np.clip(sat, 0, 1)),
                                  float(np.clip(val, 0, 1)))
    return np.array([r, g, b]) * 255.0


def _texture(latent: np.ndarray, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Pattern intensity in [0, 1] per pixel, shape (H, W); all zeros for the solid pattern."""
    kind = int(np.round(_angle(latent[12], latent[13]) / 72.0)) % 5
    strength = float(np.clip(np.hypot(latent[12], latent[13]) / 2.0, 0.25, 1.0))
    freq = 3.0 + 2.0 * (np.tanh(latent[3]) + 1.0)
    theta = np.tanh(latent[7]) * np.pi / 2
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    if kind == 0:  # stripes
        pat = (np.sin(np.pi * freq * u) > 0).astype(float)
    elif kind == 1:  # dots
        pat = ((np.sin(np.pi * freq * u) * np.sin(np.pi * freq * v)) > 0.5).astype(float)
    elif kind == 2:  # checks
        pat = ((np.sin(np.pi * freq * u) > 0) ^ (np.sin(np.pi * freq * v) > 0)).astype(float)
    elif kind == 3:  # floral: rosettes of petals
        cu, cv = np.sin(np.pi * freq * u / 2), np.sin(np.pi * freq * v / 2)
        pat = (np.cos(5 * np.arctan2(cv, cu)) * np.hypot(cu, cv) > 0.3).astype(float)
    else:  # solid
        pat = np.zeros_like(xx)
    return pat * strength


def _shape_mask(latent: np.ndarray, category: int, xx: np.ndarray, yy: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
    family = category % len(_SHAPE_EXPONENT)
    exponent = _SHAPE_EXPONENT[family] * float(np.exp(0.35 * np.tanh(latent[15])))
    scale = 0.62 + 0.22 * float(np.tanh(latent[14]))
    aspect = float(np.exp(0.25 * np.tanh(latent[5]) + 0.15 * ((category * 7) % 5 - 2) / 2))
    cx, cy = rng.normal(0.0, 0.06, size=2)
    a, b = scale * aspect ** 0.5, scale / aspect ** 0.5
    mask = np.abs((xx - cx) / a) ** exponent + np.abs((yy - cy) / b) ** exponent <= 1.0
    if family == 3:
        mask &= (yy - cy) > -b + 1.6 * np.abs(xx - cx) * b / a - b * 0.6
    return mask


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    xx, yy = np.meshgrid(coords, coords)
    xx.flags.writeable = False
    yy.flags.writeable = False
    return xx, yy


def render_image(latent: np.ndarray, category: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw one image.

    Args:
        latent: the item's latent, shape (D,) with D >= 16.
        category: the category index (picks the shape family).
        size: width and height in pixels.
        rng: the random generator for jitter and pixel noise.

    Returns:
        RGB pixels, shape (size, size, 3), uint8.
    """
    xx, yy = _grid(size)
    hue = float(np.interp(_angle(latent[0], latent[1]), _ANGLE_ANCHORS, _HUE_ANCHORS))
    tone = float(np.tanh(latent[2]))
    main = _rgb(hue, 0.65 + 0.2 * tone, 0.72 - 0.25 * tone)
    second = _rgb(hue + 180.0 / (1.0 + np.exp(-latent[9])), 0.5, 0.9 - 0.3 * tone)
    background = _rgb(_angle(latent[6], latent[7]), 0.12, 0.9 + 0.05 * float(np.tanh(latent[8])))
    tex = _texture(latent, xx, yy).astype(np.float32)[..., None]
    obj = main.astype(np.float32) + (second - main).astype(np.float32) * tex
    mask = _shape_mask(latent, category, xx, yy, rng)[..., None]
    img = np.where(mask, obj, background.astype(np.float32))
    img += PIXEL_NOISE * rng.standard_normal(size=(size, size, 3), dtype=np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def save_png(pixels: np.ndarray, path: Path) -> None:
    """Write RGB pixels as a PNG (creating the parent folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # compress_level 1: noisy pixels barely compress, and level 6 costs 4x the time
    Image.fromarray(pixels, mode="RGB").save(path, format="PNG", compress_level=1)
