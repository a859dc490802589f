"""Writing a generated dataset in VOC layout: images, masks, split lists (last), a summary."""
from __future__ import annotations

import io
import json
import multiprocessing
import os
import time
from collections import deque
from dataclasses import asdict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from skipseg.data.palette import IGNORE_INDEX, label_to_image
from skipseg.data.shapes.geometry import SHAPE_NAMES
from skipseg.data.shapes.render import SceneSpec, render_scene
from skipseg.errors import SkipsegError

GENERATOR_VERSION = 1
CLASS_NAMES = ("background", *SHAPE_NAMES)  # classes.txt: class c is shape family c (SHAPE_NAMES[c - 1])
MIN_SIZE, MAX_SIZE = 32, 4096
META_FILE = "shapes.json"  # marks a folder as a generated dataset (safe to overwrite)

# --------------------------------------------------------------------------------------- writing

def _image_id(index: int) -> str:
    return f"shapes_{index:06d}"


def jpeg_options(quality: int) -> dict:
    """How every generated image is stored (PIL save options). `objects.render_object` decodes its
    images through the same encoding, so pretraining sees the JPEG artefacts segmentation sees."""
    return {"format": "JPEG", "quality": quality, "optimize": False}


def _save(image: Image.Image, path: Path, **params) -> None:
    # Encoding in memory and writing once is measurably faster than PIL's buffered file writes.
    buffer = io.BytesIO()
    image.save(buffer, **params)
    path.write_bytes(buffer.getbuffer())


def _store(root: str, index: int, rendered: tuple, num_classes: int) -> tuple[int, np.ndarray]:
    """Encode and write one rendered image and its masks; return (objects, class pixel counts)."""
    rgb, cls_map, obj, quality = rendered
    name, base = _image_id(index), Path(root)
    _save(rgb, base / "JPEGImages" / f"{name}.jpg", **jpeg_options(quality))
    _save(label_to_image(cls_map), base / "SegmentationClass" / f"{name}.png", format="PNG",
          optimize=False)
    _save(label_to_image(obj), base / "SegmentationObject" / f"{name}.png", format="PNG", optimize=False)
    n_obj = int(np.count_nonzero(np.bincount(obj.ravel(), minlength=256)[1:IGNORE_INDEX]))
    return n_obj, np.bincount(cls_map.ravel(), minlength=256)[:num_classes]


Task = tuple[str, int, int, int, SceneSpec]  # root, seed, size, index, spec


def _write_one(task: Task) -> tuple[int, np.ndarray]:
    root, seed, size, index, spec = task
    return _store(root, index, render_scene(seed, index, size, spec), spec.classes + 1)


def _write_inline(tasks: list[Task]) -> Iterator[tuple[int, np.ndarray]]:
    """workers=0: render here while one thread encodes and writes the previous images (encoders and
    file creation release the GIL, and creating files is slow on some file systems)."""
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=1) as writer:
        try:
            for root, seed, size, index, spec in tasks:
                pending.append(writer.submit(_store, root, index, render_scene(seed, index, size, spec),
                                             spec.classes + 1))
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
                    workers: int = 0, progress: bool = False, spec: SceneSpec = SceneSpec()) -> dict:
    """Write a VOC-layout dataset to `out`; return a summary dict.

    Layout: JPEGImages/<id>.jpg, SegmentationClass/<id>.png and SegmentationObject/<id>.png
    (palette PNGs, 255 = void band), ImageSets/Segmentation/{train,val,trainval}.txt, classes.txt
    and shapes.json (the generator's arguments). The ImageSets lists are written last, so an
    interrupted run leaves no lists behind and is not mistaken for a complete dataset. `spec` narrows
    what a scene holds (fewer classes — the first VOC names —, larger or fewer objects, less clutter). Train ids are
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
            "val": val, "size": size, "seed": seed, "scene": asdict(spec)}
    (root / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    start = time.perf_counter()
    n = train + val
    tasks = [(str(root), seed, size, i, spec) for i in range(n)]
    num_classes = spec.classes + 1
    n_objects = 0
    class_pixels = np.zeros(num_classes, np.int64)
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
    (root / "classes.txt").write_text("".join(f"{c}\n" for c in CLASS_NAMES[:num_classes]))
    _write_text_atomic(lists_dir / "train.txt", ids[:train])
    _write_text_atomic(lists_dir / "val.txt", ids[train:])
    _write_text_atomic(lists_dir / "trainval.txt", ids)
    seconds = time.perf_counter() - start
    labelled = max(int(class_pixels.sum()), 1)
    return {
        "root": str(root), "num_train": train, "num_val": val, "size": size, "seed": seed,
        "num_classes": num_classes, "seconds": seconds, "images_per_s": n / max(seconds, 1e-9),
        "objects_per_image": n_objects / n, "scene": asdict(spec),
        "class_pixel_fraction": [float(c) / labelled for c in class_pixels],
    }


def _scene_text(scene: dict) -> str:
    return (f"{scene['classes']} object classes, extent {scene['min_scale']:g}-{scene['max_scale']:g} of the side, "
            f"at most {scene['max_objects']} objects, clutter {scene['clutter']:g}")


def format_summary(summary: dict) -> str:
    """A few lines for the CLI: where, how many, how fast, and how the pixels are spread."""
    frac = summary["class_pixel_fraction"]
    objects = sorted(range(1, len(frac)), key=lambda c: -frac[c])
    rare = [CLASS_NAMES[c] for c in objects if frac[c] == 0]
    lines = [
        f"shapes dataset written to {summary['root']}",
        f"  images: {summary['num_train']} train + {summary['num_val']} val, "
        f"{summary['size']}x{summary['size']} px, seed {summary['seed']}, "
        f"{summary['num_classes']} classes",
        f"  objects per image: {summary['objects_per_image']:.2f}; labelled pixels: "
        f"background {frac[0]:.1%}, objects {1 - frac[0]:.1%} "
        f"(most: {', '.join(f'{CLASS_NAMES[c]} {frac[c]:.1%}' for c in objects[:3])})",
        *([f"  scene: {_scene_text(summary['scene'])}"] if summary.get("scene", {}) != asdict(SceneSpec()) else []),
        f"  time: {summary['seconds']:.1f} s ({summary['images_per_s']:.0f} images/s)",
    ]
    if rare:
        lines.append(f"  classes with no pixels: {', '.join(rare)}")
    return "\n".join(lines)
