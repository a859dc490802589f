"""Reading and checking samples: the one code path that both `skipseg data check` and the datasets use.

A sample is an image plus a class mask (palette PNG, or an SBD `.mat`); optionally an object mask.
Every defect is a `Problem` (`path: message`). The datasets raise `DataError` carrying the very same
problems, so a sample that fails to load names the same defect, word for word, that the check reports.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageFile

from skipseg.data.palette import IGNORE_INDEX, read_label_png
from skipseg.errors import SkipsegError


@dataclass(frozen=True)
class Problem:
    """One defect of one file."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class DataError(SkipsegError):
    """A dataset file is missing or broken; `problems` are what `check_dataset` reports for it."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


# --- strict decoding --------------------------------------------------------------------------------
# With PIL's LOAD_TRUNCATED_IMAGES on, a truncated file decodes "fine" with grey padding. We force it
# off while decoding; a reference count keeps this correct when several threads decode at once.
_strict_lock = threading.Lock()
_strict_depth = 0
_strict_saved = False


@contextmanager
def _strict_decoding() -> Iterator[None]:
    global _strict_depth, _strict_saved
    with _strict_lock:
        if _strict_depth == 0:
            _strict_saved = ImageFile.LOAD_TRUNCATED_IMAGES
        _strict_depth += 1
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        with _strict_lock:
            _strict_depth -= 1
            if _strict_depth == 0:
                ImageFile.LOAD_TRUNCATED_IMAGES = _strict_saved


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _file_problem(path: Path, what: str) -> Problem | None:
    """Missing / not a file / zero bytes, or None when the file is there and non-empty."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return Problem(str(path), f"{what} not found")
    except OSError as exc:
        return Problem(str(path), f"cannot access {what} ({_reason(exc)})")
    if not path.is_file():
        return Problem(str(path), f"{what} is not a file")
    if size == 0:
        return Problem(str(path), "empty file (0 bytes)")
    return None


# --- images -----------------------------------------------------------------------------------------
def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as RGB: grayscale, 16-bit, CMYK, palette (with transparency) and alpha modes."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        array = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16") or array.max(initial=0) > 255:
            array = array / 257.0  # 16-bit range → 8-bit
        return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # PIL warns when converting such a palette straight to RGB
    # Alpha is dropped, not composited: labels were drawn on the colour pixels.
    return image.convert("RGB")


def _decode_image(path: Path) -> tuple[Image.Image | None, list[Problem]]:
    problem = _file_problem(path, "image")
    if problem:
        return None, [problem]
    try:
        with _strict_decoding(), Image.open(path) as image:
            image.load()  # actually decode: a truncated file fails here, not at open()
            # No EXIF rotation: VOC masks are aligned with the stored pixel array.
            return to_rgb(image), []
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ... on broken files
        return None, [Problem(str(path), f"unreadable image ({_reason(exc)})")]


def read_image(path: str | Path) -> Image.Image:
    """Decode an image fully and return it as RGB; raises `DataError` on any defect."""
    image, problems = _decode_image(Path(path))
    if problems:
        raise DataError(problems)
    return image


# --- masks ------------------------------------------------------------------------------------------
def _read_mat_map(path: Path, struct: str) -> np.ndarray:
    """`struct.Segmentation` of an SBD .mat file (GTcls / GTinst) as a 2-D uint8 array."""
    from scipy.io import loadmat

    # squeeze_me would flatten a 1-pixel-high map; take the 1x1 struct array apart by hand instead.
    contents = loadmat(str(path), squeeze_me=False, struct_as_record=False)
    if struct not in contents:
        keys = ", ".join(k for k in contents if not k.startswith("__")) or "none"
        raise ValueError(f"no '{struct}' struct in the file (variables: {keys})")
    record = np.asarray(contents[struct]).reshape(-1)[0]
    segmentation = getattr(record, "Segmentation", None)
    if segmentation is None:
        raise ValueError(f"'{struct}' has no 'Segmentation' field")
    array = np.asarray(segmentation)
    if array.ndim != 2:
        raise ValueError(f"'{struct}.Segmentation' has shape {array.shape}, expected (H, W)")
    if array.dtype.kind not in "uib":
        if array.dtype.kind != "f" or not np.all(np.isfinite(array)) or np.any(array != np.rint(array)):
            raise ValueError(f"'{struct}.Segmentation' holds non-integer values ({array.dtype})")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"'{struct}.Segmentation' has values outside 0..255")
    return array.astype(np.uint8)


def _decode_label_map(path: Path, what: str, mat_struct: str) -> tuple[np.ndarray | None, list[Problem]]:
    """A class or object map from a palette/index PNG or an SBD .mat file."""
    problem = _file_problem(path, what)
    if problem:
        return None, [problem]
    try:
        if path.suffix.lower() == ".mat":
            return _read_mat_map(path, mat_struct), []
        with _strict_decoding():
            return read_label_png(path), []
    except SkipsegError as exc:
        # palette.read_label_png says "<path>: <message>"; keep the message, the path is ours.
        message = str(exc).removeprefix(f"{path}: ")
        return None, [Problem(str(path), message.replace("mask is a", f"{what} is a", 1))]
    except Exception as exc:
        return None, [Problem(str(path), f"unreadable {what} ({_reason(exc)})")]


def _size_problem(path: Path, what: str, mask: np.ndarray, image_size: tuple[int, int]) -> Problem | None:
    height, width = mask.shape
    if (width, height) != tuple(image_size):
        return Problem(
            str(path), f"{what} size {width}x{height} differs from image size {image_size[0]}x{image_size[1]}"
        )
    return None


def _value_problem(path: Path, mask: np.ndarray, num_classes: int | None) -> Problem | None:
    if num_classes is None:
        return None
    counts = np.bincount(mask.ravel(), minlength=256)
    bad = [v for v in np.flatnonzero(counts).tolist() if v >= num_classes and v != IGNORE_INDEX]
    if not bad:
        return None
    shown = ", ".join(str(v) for v in bad[:12]) + (f", ... ({len(bad)} values)" if len(bad) > 12 else "")
    return Problem(str(path), f"label values outside [0, {num_classes}) and {IGNORE_INDEX}: {shown}")


def _inspect_sample(
    image_path: Path, mask_path: Path, num_classes: int | None
) -> tuple[Image.Image | None, np.ndarray | None, list[Problem]]:
    image, problems = _decode_image(image_path)
    mask, mask_problems = _decode_label_map(mask_path, "mask", "GTcls")
    problems += mask_problems
    if mask is not None:
        if image is not None:
            problem = _size_problem(mask_path, "mask", mask, image.size)
            if problem:
                problems.append(problem)
        problem = _value_problem(mask_path, mask, num_classes)
        if problem:
            problems.append(problem)
    return image, mask, problems


def check_sample(image_path: str | Path, mask_path: str | Path, num_classes: int | None) -> list[Problem]:
    """Every defect of one image + class-mask pair (empty list when it loads cleanly).

    `num_classes=None` skips the label-range check.
    """
    return _inspect_sample(Path(image_path), Path(mask_path), num_classes)[2]


def load_sample(
    image_path: str | Path, mask_path: str | Path, num_classes: int | None
) -> tuple[Image.Image, np.ndarray]:
    """(RGB image, (H, W) uint8 class mask), checked exactly as `check_sample`; else `DataError`."""
    image, mask, problems = _inspect_sample(Path(image_path), Path(mask_path), num_classes)
    if problems:
        raise DataError(problems)
    return image, mask


def _image_size(image_path: Path) -> tuple[int, int] | None:
    """The image's (W, H) from its header, or None when that cannot be read."""
    try:
        with Image.open(image_path) as image:
            return image.size
    except Exception:
        return None


def _inspect_objects(
    path: Path, image_size: tuple[int, int] | None
) -> tuple[np.ndarray | None, list[Problem]]:
    objects, problems = _decode_label_map(path, "object mask", "GTinst")
    if objects is not None and image_size is not None:
        problem = _size_problem(path, "object mask", objects, image_size)
        problems += [problem] if problem else []
    return objects, problems


def check_object_mask(object_path: str | Path, image_size: tuple[int, int] | None) -> list[Problem]:
    """Defects of an object (instance) mask: missing, empty, unreadable, not indices, wrong size."""
    return _inspect_objects(Path(object_path), image_size)[1]


def load_object_mask(object_path: str | Path, image_path: str | Path | None = None) -> np.ndarray:
    """(H, W) uint8 instance ids (0 background, 255 void in VOC); checked against the image size."""
    size = _image_size(Path(image_path)) if image_path is not None else None
    objects, problems = _inspect_objects(Path(object_path), size)
    if problems:
        raise DataError(problems)
    return objects


# --- whole datasets ---------------------------------------------------------------------------------
def check_entry(entry: tuple[Path, Path, Path | None], num_classes: int | None) -> list[Problem]:
    image_path, mask_path, object_path = entry
    image, _, problems = _inspect_sample(image_path, mask_path, num_classes)
    if object_path is not None:
        problems += check_object_mask(object_path, image.size if image is not None else None)
    return problems
