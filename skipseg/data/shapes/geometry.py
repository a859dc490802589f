"""Shape outlines of the generated dataset: one family per VOC object class, plus distractor blobs."""
from __future__ import annotations

import math

import numpy as np


# Unit outlines: (N, 2) vertex arrays inside the unit disc; a shape is a list of (polygon, fill)
# drawn in order, fill False cutting holes (ring, crescent, frame).
Part = tuple[np.ndarray, bool]
# Drawable shape: all vertices (N, 2) and, per part, its slice of the flattened coordinates and fill.
Shape = tuple[np.ndarray, tuple[tuple[int, int, bool], ...]]


def _arc(r: float, a0: float = 0.0, a1: float = 2 * math.pi, n: int = 64, cx: float = 0.0,
         cy: float = 0.0) -> np.ndarray:
    t = np.linspace(a0, a1, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _ngon(k: int, phase: float = 0.0) -> np.ndarray:
    return _arc(1.0, phase, phase + 2 * math.pi, k)


def _star(k: int, inner: float) -> np.ndarray:
    t = np.arange(2 * k) * math.pi / k - math.pi / 2
    r = np.where(np.arange(2 * k) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _poly(*pts: float) -> np.ndarray:
    return np.asarray(pts, dtype=np.float64).reshape(-1, 2)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y + 2.5], axis=1)


def _rect(hw: float, hh: float) -> np.ndarray:
    return _poly(-hw, -hh, hw, -hh, hw, hh, -hw, hh)


# Shape families, one per VOC class index 1..20, chosen to stay distinct under rotation and mild
# aspect jitter (no square-vs-diamond or plus-vs-X pairs). Each takes the rng for its own jitter.
_FAMILIES: list[tuple[str, object]] = [
    ("plus", lambda g: [(_poly(-1, -.3, -.3, -.3, -.3, -1, .3, -1, .3, -.3, 1, -.3, 1, .3, .3, .3,
                               .3, 1, -.3, 1, -.3, .3, -1, .3), True)]),
    ("ring", lambda g: [(_arc(1.0), True), (_arc(g.uniform(0.5, 0.65)), False)]),
    ("triangle", lambda g: [(_ngon(3, -math.pi / 2), True)]),
    ("semicircle", lambda g: [(np.concatenate([_arc(1, 0, math.pi, 48), [[-1.0, 0.0]]]), True)]),
    ("ellipse", lambda g: [(_arc(1.0) * [1.0, g.uniform(0.3, 0.45)], True)]),
    ("square", lambda g: [(_rect(0.7, 0.7), True)]),
    ("trapezoid", lambda g: [(_poly(-1, .55, 1, .55, .45, -.55, -.45, -.55), True)]),
    ("star", lambda g: [(_star(5, g.uniform(0.38, 0.48)), True)]),
    ("L-shape", lambda g: [(_poly(-.6, -1, -.2, -1, -.2, .6, .7, .6, .7, 1, -.6, 1), True)]),
    ("hexagon", lambda g: [(_ngon(6), True)]),
    ("T-shape", lambda g: [(_poly(-1, -1, 1, -1, 1, -.55, .22, -.55, .22, 1, -.22, 1, -.22, -.55,
                                  -1, -.55), True)]),
    ("heart", lambda g: [(_heart(), True)]),
    ("crescent", lambda g: [(_arc(1.0), True), (_arc(g.uniform(0.8, 0.9), cx=g.uniform(0.4, 0.55)),
                                                 False)]),
    ("arrow", lambda g: [(_poly(-1, -.22, .15, -.22, .15, -.6, 1, 0, .15, .6, .15, .22, -1, .22),
                          True)]),
    ("disc", lambda g: [(_arc(1.0), True)]),
    ("bow-tie", lambda g: [(_poly(-.9, -.9, 0, -.18, .9, -.9, .9, .9, 0, .18, -.9, .9), True)]),
    ("sparkle", lambda g: [(_star(4, g.uniform(0.25, 0.35)), True)]),
    ("U-shape", lambda g: [(_poly(-.75, -.9, -.32, -.9, -.32, .45, .32, .45, .32, -.9, .75, -.9,
                                  .75, .9, -.75, .9), True)]),
    ("chevron", lambda g: [(_poly(-.75, -1, -.2, -1, .75, 0, -.2, 1, -.75, 1, .2, 0), True)]),
    ("frame", lambda g: [(_rect(0.7, 0.7), True), (_rect(0.42, 0.42), False)]),
]
SHAPE_NAMES: tuple[str, ...] = tuple(name for name, _ in _FAMILIES)  # SHAPE_NAMES[c - 1] is class c


def _normalise(parts: list[Part]) -> Shape:
    """Concatenate a shape's parts into one vertex array scaled to fill the unit disc, so that
    `scale` means the same extent for every class."""
    radius = max(float(np.hypot(p[:, 0], p[:, 1]).max()) for p, fill in parts if fill)
    bounds, start = [], 0
    for p, fill in parts:
        bounds.append((2 * start, 2 * (start + len(p)), fill))
        start += len(p)
    return np.concatenate([p for p, _ in parts]) / radius, tuple(bounds)


# A few fixed jitters of each family, built once: cheaper than building outlines per object.
VARIANTS: list[list[Shape]] = [
    [_normalise(build(np.random.default_rng([20240, f, v]))) for v in range(8)]
    for f, (_, build) in enumerate(_FAMILIES)
]


def jagged_blob(rng: np.random.Generator) -> Shape:
    """A distractor: an irregular jagged blob that is none of the 20 families (labelled background)."""
    k = int(rng.integers(9, 15))
    t = np.sort(rng.uniform(0, 2 * math.pi, k))
    r = rng.uniform(0.35, 1.0, k)
    return _normalise([(np.stack([r * np.cos(t), r * np.sin(t)], axis=1), True)])

