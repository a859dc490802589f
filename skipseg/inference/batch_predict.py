"""Predict a list of image files in size-grouped batches; write palette PNGs and overlays."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from skipseg.data.palette import save_label_png
from skipseg.data.transforms import normalize
from skipseg.core.loading import guarded_batches
from skipseg.core.runtime import Runtime
from skipseg.core.sampling import SizeGroupedBatchSampler
from skipseg.errors import SkipsegError
from skipseg.inference.predictor import overlay, predict_probs, read_rgb_tensor


class _ImageFiles(Dataset):
    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return read_rgb_tensor(self.paths[index]), index  # uint8: normalised per batch, reused for overlays


def _size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except OSError as exc:
        raise SkipsegError(f"{path}: not a readable image ({exc})") from None


def predict_files(model: nn.Module, paths: Sequence[Path], out_dir: Path, runtime: Runtime, *,
                  batch_size: int = 4, flip: bool = False, scales: Sequence[float] = (1.0,),
                  workers: int = 0, progress: bool = True) -> int:
    """Write `<stem>.png` and `<stem>_overlay.jpg` for each image into `out_dir`; returns the count."""
    clashes = [stem for stem, n in Counter(p.stem for p in paths).items() if n > 1]
    if clashes:
        raise SkipsegError(f"{clashes[0]}: several input images share this name; outputs would overwrite each other")
    out_dir.mkdir(parents=True, exist_ok=True)
    sampler = SizeGroupedBatchSampler([_size(p) for p in paths], batch_size)
    loader = guarded_batches(_ImageFiles(paths), sampler, workers)
    written = 0
    with tqdm(total=len(paths), desc="predict", unit="img", disable=not progress) as bar:
        for images, indices in loader:  # images: uint8 [N, 3, H, W], each file decoded once
            labels = predict_probs(model, normalize(images), runtime, flip=flip, scales=scales).argmax(1)
            rgbs = images.permute(0, 2, 3, 1).numpy()
            for label, rgb, index in zip(labels.cpu().numpy().astype(np.uint8), rgbs, indices.tolist()):
                path = paths[index]
                save_label_png(out_dir / f"{path.stem}.png", label)
                Image.fromarray(overlay(rgb, label)).save(out_dir / f"{path.stem}_overlay.jpg", quality=90)
                written += 1
            bar.update(len(indices))
    return written
