"""Rendering one generated scene: cluttered background, distractors, occluding objects, void band.

`render_scene(seed, index, size)` is a pure function of its arguments (its own RNG stream).
"""
from __future__ import annotations

import colorsys
import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from skipseg.data.palette import IGNORE_INDEX, VOC_CLASSES
from skipseg.data.shapes.geometry import VARIANTS, Shape, jagged_blob

NUM_CLASSES = len(VOC_CLASSES)  # 21, background included
SCALE_RANGE = (0.05, 0.9)  # object extent as a fraction of the image side, log-uniform
MAX_OBJECTS = 6


@dataclass(frozen=True)
class SceneSpec:
    """What a scene may contain. The defaults are the embedded dataset (all 20 classes, tiny to
    image-filling, up to 6 objects, full clutter); smaller settings make an easier variant for a
    short CPU budget (the demo), drawn by the same renderer."""

    classes: int = NUM_CLASSES - 1  # object classes 1..classes (shape families in SHAPE_NAMES order)
    min_scale: float = SCALE_RANGE[0]  # object extent as a fraction of the image side, log-uniform
    max_scale: float = SCALE_RANGE[1]
    max_objects: int = MAX_OBJECTS
    clutter: float = 1.0  # multiplies the number of distractor blobs and lines (0 = a plain background)

    def __post_init__(self) -> None:
        from skipseg.errors import SkipsegError

        if not 1 <= self.classes <= NUM_CLASSES - 1:
            raise SkipsegError(f"classes: {self.classes}, expected 1..{NUM_CLASSES - 1}")
        if not 0.01 <= self.min_scale <= self.max_scale <= 1.0:
            raise SkipsegError(f"min_scale/max_scale: {self.min_scale}/{self.max_scale}, expected "
                               "0.01 <= min_scale <= max_scale <= 1")
        if not 1 <= self.max_objects <= 20:
            raise SkipsegError(f"max_objects: {self.max_objects}, expected 1..20")
        if not 0.0 <= self.clutter <= 4.0:
            raise SkipsegError(f"clutter: {self.clutter}, expected 0..4")

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


def render_scene(seed: int, index: int, size: int, spec: SceneSpec = SceneSpec(), stream: tuple[int, ...] = ()
                 ) -> tuple[Image.Image, np.ndarray, np.ndarray, int]:
    """Scene `index` of the data with `seed`; `stream` names another family of images drawn by the
    same renderer (the classification images of `objects.py`), () being the segmentation data."""
    rng = np.random.default_rng([seed, index, *stream])
    img = _background(rng, size)
    # Distractors under the objects, labelled background: jagged textured blobs, then lines.
    # (Counts are drawn first and then scaled, so the default spec keeps its byte-exact images.)
    for _ in range(round(int(rng.integers(0, 4)) * spec.clutter)):
        scale = math.exp(rng.uniform(math.log(0.05), math.log(0.4)))
        placed = _place(rng, jagged_blob(rng), size, scale)
        if placed is not None:
            _paint(rng, img, placed, _colour(rng))
    n_lines = round(int(rng.integers(0, 6)) * spec.clutter)
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
    n = int(rng.integers(1, spec.max_objects + 1))
    classes = rng.integers(1, spec.classes + 1, n)
    scales = np.exp(rng.uniform(math.log(spec.min_scale), math.log(spec.max_scale), n))
    main_low = min(max(0.25, spec.min_scale), spec.max_scale)
    scales[0] = math.exp(rng.uniform(math.log(main_low), math.log(spec.max_scale)))  # a main object
    order = np.argsort(-(np.log(scales) + rng.normal(0, 0.5, n)), kind="stable")
    obj = np.zeros((size, size), np.uint8)
    full_area = np.zeros(n + 1, np.int64)
    visible = np.zeros(n + 1, np.int64)
    inst_class = np.zeros(256, np.uint8)
    for k, j in enumerate(order, start=1):
        cls = int(classes[j])
        shape = VARIANTS[cls - 1][int(rng.integers(len(VARIANTS[cls - 1])))]
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


def render_shapes_image(seed: int, index: int, size: int, spec: SceneSpec = SceneSpec()
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Render image `index` of the dataset with `seed`, in memory: (RGB uint8 (H, W, 3) before JPEG,
    class mask, object mask, JPEG quality). Masks are uint8 (H, W) with 255 on the border band."""
    rgb, cls_map, obj, quality = render_scene(seed, index, size, spec)
    return np.asarray(rgb), cls_map, obj, quality

