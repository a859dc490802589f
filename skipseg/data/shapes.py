"""The embedded default dataset: procedurally generated scenes written in PASCAL VOC layout.

Each of the 20 VOC object classes is a shape family (see `SHAPE_NAMES`); colour and texture are
drawn independently of the class except for a weak, strongly overlapping hue preference, so a model
has to look at shape. Objects range from tiny (5 % of the image side) to image-filling (90 %),
1-6 per image, occluding each other over a cluttered background (gradients, blotches, stripes, lines
and jagged distractor blobs labelled background). Masks carry a 255 band on object borders as VOC does.

Image `shapes_<n>` is a pure function of (seed, n, size): the same arguments give byte-identical
files whatever the number of workers, and ids keep their content when --train/--val change.
"""
from __future__ import annotations

import colorsys
import functools
import io
import json
import math
import multiprocessing
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from skipseg.data.palette import IGNORE_INDEX, VOC_CLASSES, label_to_image
from skipseg.errors import SkipsegError

GENERATOR_VERSION = 1
NUM_CLASSES = len(VOC_CLASSES)  # 21, background included
MIN_SIZE, MAX_SIZE = 32, 4096
SCALE_RANGE = (0.05, 0.9)  # object extent as a fraction of the image side, log-uniform
MAX_OBJECTS = 6
META_FILE = "shapes.json"  # marks a folder as a generated dataset (safe to overwrite)

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
_VARIANTS: list[list[Shape]] = [
    [_normalise(build(np.random.default_rng([20240, f, v]))) for v in range(8)]
    for f, (_, build) in enumerate(_FAMILIES)
]


def _jagged(rng: np.random.Generator) -> Shape:
    """A distractor: an irregular jagged blob that is none of the 20 families (labelled background)."""
    k = int(rng.integers(9, 15))
    t = np.sort(rng.uniform(0, 2 * math.pi, k))
    r = rng.uniform(0.35, 1.0, k)
    return _normalise([(np.stack([r * np.cos(t), r * np.sin(t)], axis=1), True)])


# --------------------------------------------------------------------------------------- textures
# Images are built planar, (3, H, W) float32: numpy is several times faster on long inner loops
# than on a trailing axis of length 3.

def _colour(rng: np.random.Generator, hue: float | None = None) -> np.ndarray:
    h = rng.uniform() if hue is None else hue % 1.0
    rgb = colorsys.hsv_to_rgb(h, rng.uniform(0.15, 1.0), rng.uniform(0.25, 1.0))
    return np.asarray(rgb, dtype=np.float32) * 255


@functools.lru_cache(maxsize=2048)
def _interp(n: int, cells: int) -> np.ndarray:
    """(n, cells) Gaussian interpolation weights from a coarse grid to n samples (rows sum to 1)."""
    t = np.linspace(0, cells - 1, n)[:, None] - np.arange(cells)[None, :]
    w = np.exp(-0.5 * (t / 0.7) ** 2)
    return (w / w.sum(1, keepdims=True)).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int, channels: int = 0) -> np.ndarray:
    """Smooth random field in about [-1, 1], (h, w) or (channels, h, w): a separable upsampling of a
    cells x cells random grid (two small matrix products instead of an image resize)."""
    grid = rng.uniform(-1, 1, (channels, cells, cells) if channels else (cells, cells))
    return _interp(h, cells) @ grid.astype(np.float32) @ _interp(w, cells).T


def _texture(rng: np.random.Generator, h: int, w: int, cx: float, cy: float, radius: float,
             c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
    """(3, h, w) colours of a patch whose object has centre (cx, cy) in patch coordinates: flat,
    gradient, stripes or blotches between c0 and c1, with shading across."""
    phi = rng.uniform(0, 2 * math.pi)
    cp, sp = math.cos(phi), math.sin(phi)
    ys = ((np.arange(h, dtype=np.float32) - cy) * (1 / radius))[:, None]
    xs = ((np.arange(w, dtype=np.float32) - cx) * (1 / radius))[None, :]
    kind = int(rng.integers(4))
    if kind == 0:
        f = None
    elif kind == 1:
        f = np.clip((cp * xs + sp * ys) * 0.5 + 0.5, 0, 1)
    elif kind == 2:
        f = np.sin((cp * xs + sp * ys) * rng.uniform(4, 12) + rng.uniform(0, 2 * math.pi))
        f = np.clip(f * (rng.uniform(0.5, 4) * 0.5) + 0.5, 0, 1)
    else:
        f = np.clip(_smooth_noise(rng, h, w, int(rng.integers(3, 7))) * 1.5 + 0.5, 0, 1)
    shade = 1 + rng.uniform(0, 0.35) * np.clip(cp * ys - sp * xs, -1, 1)  # (h, w)
    if f is None:
        return c0[:, None, None] * shade[None]
    return (c0[:, None, None] + f[None] * (c1 - c0)[:, None, None]) * shade[None]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(3, size, size) float32 cluttered background: a texture, coloured blotches, maybe stripes."""
    half = size / 2
    img = _texture(rng, size, size, half, half, half, _colour(rng), _colour(rng))
    img += _smooth_noise(rng, size, size, int(rng.integers(3, 8)), 3) * rng.uniform(10, 60)
    img += _smooth_noise(rng, size, size, int(rng.integers(8, 20)), 3) * rng.uniform(0, 40)
    if rng.uniform() < 0.5:
        phi = rng.uniform(0, math.pi)
        coord = np.arange(size, dtype=np.float32) * (2 * math.pi / rng.uniform(3, 0.25 * size))
        stripes = np.sin(math.cos(phi) * coord[None, :] + math.sin(phi) * coord[:, None])
        img += stripes[None] * (rng.uniform(8, 40) * rng.uniform(0.5, 1, (3, 1, 1)).astype(np.float32))
    return img


# --------------------------------------------------------------------------------------- rendering

Placed = tuple[int, int, np.ndarray, float, float, float]  # x0, y0, mask patch, cx, cy (patch), radius


def _place(rng: np.random.Generator, shape: Shape, size: int, scale: float) -> Placed | None:
    """Rotate, jitter and position a unit shape and rasterise it; None when it misses the image."""
    pts, bounds = shape
    radius = scale * size / 2
    aspect = math.exp(rng.uniform(-0.15, 0.15))
    theta = rng.uniform(0, 2 * math.pi)
    c, s = math.cos(theta) * radius, math.sin(theta) * radius
    lim = 0.35 * scale  # big objects stay mostly inside the image, small ones may touch the edge
    cx, cy = rng.uniform(lim, 1 - lim, 2) * size if lim < 0.5 else (size / 2, size / 2)
    q = pts @ np.array([[c * aspect, s * aspect], [-s / aspect, c / aspect]]) + (cx, cy)
    (lx, ly), (hx, hy) = q.min(0), q.max(0)
    x0, y0 = max(0, math.floor(lx)), max(0, math.floor(ly))
    x1, y1 = min(size, math.ceil(hx) + 1), min(size, math.ceil(hy) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    patch = Image.new("1", (x1 - x0, y1 - y0), 0)
    draw = ImageDraw.Draw(patch)
    flat = (q - (x0, y0)).ravel().tolist()
    for start, end, fill in bounds:
        draw.polygon(flat[start:end], fill=1 if fill else 0)
    mask = np.asarray(patch)
    if not mask.any():
        return None
    return x0, y0, mask, cx - x0, cy - y0, radius


def _paint(rng: np.random.Generator, img: np.ndarray, placed: Placed, c0: np.ndarray) -> None:
    x0, y0, mask, pcx, pcy, radius = placed
    h, w = mask.shape
    c1 = _colour(rng) if rng.uniform() < 0.5 else c0 * rng.uniform(0.4, 1.6)
    np.copyto(img[:, y0:y0 + h, x0:x0 + w], _texture(rng, h, w, pcx, pcy, radius, c0, c1), where=mask)


def _window(a: np.ndarray, r: int, op) -> np.ndarray:
    """Max or min (`op` = np.maximum / np.minimum) over a (2r+1)^2 window, edges replicated."""
    out = a.copy()
    for d in range(1, r + 1):
        op(out[d:], a[:-d], out=out[d:])
        op(out[:-d], a[d:], out=out[:-d])
    rows = out.copy()
    for d in range(1, r + 1):
        op(out[:, d:], rows[:, :-d], out=out[:, d:])
        op(out[:, :-d], rows[:, d:], out=out[:, :-d])
    return out


def void_band(obj: np.ndarray, r: int) -> np.ndarray:
    """The VOC-style void band of an instance map (0 = background): pixels within `r` (Chebyshev)
    of a change of id, on both sides. An instance the band would all but swallow (fewer than 4
    pixels or 15 % left) keeps its own pixels and the band lies only outside it; where two such
    instances touch, the one drawn later (higher id) keeps the contact pixels."""
    band = _window(obj, r, np.maximum) != _window(obj, r, np.minimum)
    total = np.bincount(obj.ravel(), minlength=256)
    core = np.bincount(obj[~band], minlength=256)
    starved = (core < np.minimum(total, 4)) | (core < 0.15 * total)
    starved[0] = False
    if starved.any():
        mine = starved[obj]
        top = _window(np.where(mine, obj, 0).astype(np.uint8), r, np.maximum)
        band &= ~(mine & (top == obj))
    return band


def band_radius(size: int) -> int:
    """Half-width of the void band: 1 px each side at 128 px (a 2 px band), ~6 px band at 500 px."""
    return max(1, round(size / 192))


def _render(seed: int, index: int, size: int) -> tuple[Image.Image, np.ndarray, np.ndarray, int]:
    rng = np.random.default_rng([seed, index])
    img = _background(rng, size)
    # Distractors under the objects, labelled background: jagged textured blobs, then lines.
    for _ in range(int(rng.integers(0, 4))):
        scale = math.exp(rng.uniform(math.log(0.05), math.log(0.4)))
        placed = _place(rng, _jagged(rng), size, scale)
        if placed is not None:
            _paint(rng, img, placed, _colour(rng))
    n_lines = int(rng.integers(0, 6))
    if n_lines:
        canvas = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(canvas)
        for i in range(1, n_lines + 1):
            pts = rng.uniform(-0.1, 1.1, (int(rng.integers(2, 5)), 2)) * size
            draw.line(pts.ravel().tolist(), fill=i, width=int(rng.integers(1, max(2, size // 40) + 1)))
        ids = np.asarray(canvas).ravel()
        where = np.flatnonzero(ids)
        colours = np.stack([np.zeros(3, np.float32)] + [_colour(rng) for _ in range(n_lines)])
        img.reshape(3, -1)[:, where] = colours[ids[where]].T

    # Objects: big ones first (mostly), so small ones sit on top; a placement that would hide more
    # than 70 % of an earlier object is retried (up to 3 times, then kept: heavy occlusion happens).
    n = int(rng.integers(1, MAX_OBJECTS + 1))
    classes = rng.integers(1, NUM_CLASSES, n)
    scales = np.exp(rng.uniform(math.log(SCALE_RANGE[0]), math.log(SCALE_RANGE[1]), n))
    scales[0] = math.exp(rng.uniform(math.log(0.25), math.log(SCALE_RANGE[1])))  # a main object
    order = np.argsort(-(np.log(scales) + rng.normal(0, 0.5, n)), kind="stable")
    obj = np.zeros((size, size), np.uint8)
    full_area = np.zeros(n + 1, np.int64)
    visible = np.zeros(n + 1, np.int64)
    inst_class = np.zeros(256, np.uint8)
    for k, j in enumerate(order, start=1):
        cls = int(classes[j])
        shape = _VARIANTS[cls - 1][int(rng.integers(len(_VARIANTS[cls - 1])))]
        placed, covered = None, None
        for _attempt in range(4):
            cand = _place(rng, shape, size, float(scales[j]))
            if cand is None:
                continue
            x0, y0, mask = cand[:3]
            under = obj[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]][mask]
            placed, covered = cand, np.bincount(under, minlength=n + 1)
            if np.all((visible - covered)[1:k] >= 0.3 * full_area[1:k]):
                break
        if placed is None:
            continue
        # Colour: half the time near a class hue (neighbouring classes 0.05 apart, spread 0.08),
        # otherwise any hue, so the colour distributions of all classes overlap heavily.
        hue = (cls - 1) / 20 + rng.normal(0, 0.08) if rng.uniform() < 0.5 else None
        _paint(rng, img, placed, _colour(rng, hue))
        x0, y0, mask = placed[:3]
        obj[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]][mask] = k
        visible -= covered
        full_area[k] = visible[k] = int(np.count_nonzero(mask))
        inst_class[k] = cls

    band = void_band(obj, band_radius(size))
    cls_map = inst_class[obj]
    cls_map[band] = IGNORE_INDEX
    obj[band] = IGNORE_INDEX
    # Renumber the instances left visible 1..K, in drawing order.
    lut = np.zeros(256, np.uint8)
    lut[IGNORE_INDEX] = IGNORE_INDEX
    present = np.flatnonzero(np.bincount(obj.ravel(), minlength=256)[1:IGNORE_INDEX]) + 1
    lut[present] = np.arange(1, len(present) + 1)
    obj = lut[obj]

    # Global photometric jitter: lighting ramp, sensor noise, then per-channel gain, contrast and
    # gamma as lookup tables, maybe a slight blur; JPEG quality is drawn here too.
    phi = rng.uniform(0, 2 * math.pi)
    ramp = np.linspace(-1, 1, size, dtype=np.float32) * rng.uniform(0, 0.3)
    img *= (1 + math.cos(phi) * ramp[None, :] + math.sin(phi) * ramp[:, None])[None]
    if rng.uniform() < 0.7:  # luminance noise, uniform bytes (std 73.9) scaled to sigma <= 8 levels
        noise = np.frombuffer(rng.bytes(size * size), np.uint8).reshape(1, size, size)
        k = np.float32(rng.uniform(0, 8) / 73.9)
        img += noise * k - np.float32(127.5 * k)
    np.clip(img, 0, 255, out=img)
    planes = img.astype(np.uint8)
    levels = np.arange(256) / 255
    contrast, gamma = rng.uniform(0.7, 1.3), math.exp(rng.uniform(-0.25, 0.25))
    gains = rng.uniform(0.85, 1.15, 3) * rng.uniform(0.8, 1.2)
    luts = np.round(np.clip(((levels - 0.5) * contrast + 0.5)[None] * gains[:, None], 0, 1) ** gamma
                    * 255).astype(np.uint8)
    rgb = Image.merge("RGB", [Image.fromarray(np.take(luts[c], planes[c])) for c in range(3)])
    if rng.uniform() < 0.4:
        sigma = rng.uniform(0.3, 0.8) * size / 128
        if sigma < 0.9:  # a 3x3 Gaussian kernel is exact enough here and much faster than GaussianBlur
            w = math.exp(-0.5 / sigma**2)
            rgb = rgb.filter(ImageFilter.Kernel((3, 3), [w * w, w, w * w, w, 1, w, w * w, w, w * w]))
        else:
            rgb = rgb.filter(ImageFilter.GaussianBlur(sigma))
    return rgb, cls_map, obj, int(rng.integers(60, 96))


def render_shapes_image(seed: int, index: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Render image `index` of the dataset with `seed`, in memory: (RGB uint8 (H, W, 3) before JPEG,
    class mask, object mask, JPEG quality). Masks are uint8 (H, W) with 255 on the border band."""
    rgb, cls_map, obj, quality = _render(seed, index, size)
    return np.asarray(rgb), cls_map, obj, quality


# --------------------------------------------------------------------------------------- writing

def _image_id(index: int) -> str:
    return f"shapes_{index:06d}"


def _save(image: Image.Image, path: Path, **params) -> None:
    # Encoding in memory and writing once is measurably faster than PIL's buffered file writes.
    buffer = io.BytesIO()
    image.save(buffer, **params)
    path.write_bytes(buffer.getbuffer())


def _store(root: str, index: int, rendered: tuple) -> tuple[int, np.ndarray]:
    """Encode and write one rendered image and its masks; return (objects, class pixel counts)."""
    rgb, cls_map, obj, quality = rendered
    name, base = _image_id(index), Path(root)
    _save(rgb, base / "JPEGImages" / f"{name}.jpg", format="JPEG", quality=quality, optimize=False)
    _save(label_to_image(cls_map), base / "SegmentationClass" / f"{name}.png", format="PNG",
          optimize=False)
    _save(label_to_image(obj), base / "SegmentationObject" / f"{name}.png", format="PNG", optimize=False)
    n_obj = int(np.count_nonzero(np.bincount(obj.ravel(), minlength=256)[1:IGNORE_INDEX]))
    return n_obj, np.bincount(cls_map.ravel(), minlength=256)[:NUM_CLASSES]


def _write_one(task: tuple[str, int, int, int]) -> tuple[int, np.ndarray]:
    root, seed, size, index = task
    return _store(root, index, _render(seed, index, size))


def _write_inline(tasks: list[tuple[str, int, int, int]]) -> Iterator[tuple[int, np.ndarray]]:
    """workers=0: render here while one thread encodes and writes the previous images (encoders and
    file creation release the GIL, and creating files is slow on some file systems)."""
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=1) as writer:
        try:
            for root, seed, size, index in tasks:
                pending.append(writer.submit(_store, root, index, _render(seed, index, size)))
                while len(pending) > 4 or (pending and pending[0].done()):
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SkipsegError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise SkipsegError(f"{name} must be {bounds}, got {value}")
    return int(value)


def _write_text_atomic(path: Path, lines: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{line}\n" for line in lines))
    os.replace(tmp, path)


def generate_shapes(out: str | Path, train: int = 200, val: int = 50, size: int = 128, seed: int = 0,
                    workers: int = 0, progress: bool = False) -> dict:
    """Write a VOC-layout dataset to `out`; return a summary dict.

    Layout: JPEGImages/<id>.jpg, SegmentationClass/<id>.png and SegmentationObject/<id>.png
    (palette PNGs, 255 = void band), ImageSets/Segmentation/{train,val,trainval}.txt, classes.txt
    and shapes.json (the generator's arguments). The ImageSets lists are written last, so an
    interrupted run leaves no lists behind and is not mistaken for a complete dataset. Train ids are
    shapes_000000.., val ids follow them. `workers` > 1 renders in a process pool (0 or 1: in this
    process, with one thread writing files); files are byte-identical for any `workers`. Regenerating into an earlier output folder overwrites it (files
    of ids no longer listed stay, unlisted); a folder holding another dataset's lists is refused.
    """
    train = _check_int("train", train, 0)
    val = _check_int("val", val, 0)
    size = _check_int("size", size, MIN_SIZE, MAX_SIZE)
    seed = _check_int("seed", seed, 0)
    workers = _check_int("workers", workers, 0)
    if train + val == 0:
        raise SkipsegError("train and val are both 0: nothing to generate")
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise SkipsegError(f"{root}: exists and is not a directory")
    lists_dir = root / "ImageSets" / "Segmentation"
    if (lists_dir / "train.txt").exists() and not (root / META_FILE).exists():
        raise SkipsegError(f"{root}: already holds a dataset that was not generated by skipseg; "
                           "choose another output folder")
    for sub in ("JPEGImages", "SegmentationClass", "SegmentationObject"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    lists_dir.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "trainval"):  # an earlier run's lists would claim completeness
        (lists_dir / f"{split}.txt").unlink(missing_ok=True)
    meta = {"generator": "skipseg.data.shapes", "version": GENERATOR_VERSION, "train": train,
            "val": val, "size": size, "seed": seed}
    (root / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    start = time.perf_counter()
    n = train + val
    tasks = [(str(root), seed, size, i) for i in range(n)]
    n_objects = 0
    class_pixels = np.zeros(NUM_CLASSES, np.int64)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n, unit="img", desc="shapes")
    procs = min(workers, n)
    pool = multiprocessing.get_context().Pool(procs) if procs > 1 else None
    results = (pool.imap_unordered(_write_one, tasks, chunksize=max(1, min(32, n // (4 * procs))))
               if pool is not None else _write_inline(tasks))
    try:
        for n_obj, counts in results:
            n_objects += n_obj
            class_pixels += counts
            if bar is not None:
                bar.update(1)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        else:
            results.close()  # stops the writer thread at once if we are leaving on an error
        if bar is not None:
            bar.close()

    ids = [_image_id(i) for i in range(n)]
    (root / "classes.txt").write_text("".join(f"{c}\n" for c in VOC_CLASSES))
    _write_text_atomic(lists_dir / "train.txt", ids[:train])
    _write_text_atomic(lists_dir / "val.txt", ids[train:])
    _write_text_atomic(lists_dir / "trainval.txt", ids)
    seconds = time.perf_counter() - start
    labelled = max(int(class_pixels.sum()), 1)
    return {
        "root": str(root), "num_train": train, "num_val": val, "size": size, "seed": seed,
        "num_classes": NUM_CLASSES, "seconds": seconds, "images_per_s": n / max(seconds, 1e-9),
        "objects_per_image": n_objects / n,
        "class_pixel_fraction": [float(c) / labelled for c in class_pixels],
    }


def format_summary(summary: dict) -> str:
    """A few lines for the CLI: where, how many, how fast, and how the pixels are spread."""
    frac = summary["class_pixel_fraction"]
    objects = sorted(range(1, len(frac)), key=lambda c: -frac[c])
    rare = [VOC_CLASSES[c] for c in objects if frac[c] == 0]
    lines = [
        f"shapes dataset written to {summary['root']}",
        f"  images: {summary['num_train']} train + {summary['num_val']} val, "
        f"{summary['size']}x{summary['size']} px, seed {summary['seed']}, "
        f"{summary['num_classes']} classes",
        f"  objects per image: {summary['objects_per_image']:.2f}; labelled pixels: "
        f"background {frac[0]:.1%}, objects {1 - frac[0]:.1%} "
        f"(most: {', '.join(f'{VOC_CLASSES[c]} {frac[c]:.1%}' for c in objects[:3])})",
        f"  time: {summary['seconds']:.1f} s ({summary['images_per_s']:.0f} images/s)",
    ]
    if rare:
        lines.append(f"  classes with no pixels: {', '.join(rare)}")
    return "\n".join(lines)
