"""Before any fine-tuning: how much a shape-pretrained VGG file knows about a segmentation dataset's objects.

    python -m bench.transfer WEIGHTS --data DIR [--images N] [--crops N] [--out FILE]

- its own classifier's top-1 on N held-out pretraining images (seed 0's val stream), as stored (the
  dataset writer's JPEG, what `skipseg pretrain` trains on) and as the renderer draws them (raw);
- its top-1 (20-way) on DIR's training images that hold exactly one object (the class of its pixels);
- a linear probe: multinomial logistic regression (L-BFGS, L2 1e-3, standardised features) on the
  global-average-pooled fc7 of DeconvNet's encoder, the file loaded through `weights:`, fitted on
  2/3 of N random stage-1 instance crops of DIR (box x 1.2, no augmentation), scored on the other
  third: does the code that DeconvNet's decoder reads name the object?
Writes FILE (JSON, default bench/results/transfer.json) and prints the figures.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from skipseg.data.augmentation import train_transforms
from skipseg.data.datasets import open_dataset
from skipseg.data.instances import InstanceCropDataset
from skipseg.data.palette import IGNORE_INDEX
from skipseg.data.shapes.objects import CLASS_NAMES, render_object
from skipseg.data.transforms import normalize
from skipseg.errors import SkipsegError
from skipseg.models.classifiers import build_pretrain_classifier
from skipseg.models.deconvnet import deconvnet
from skipseg.models.pretrained import read_card

ROOT = Path(__file__).resolve().parents[1]


def _normalised(images: np.ndarray) -> torch.Tensor:
    """[N, H, W, 3] uint8 → [N, 3, H, W] ImageNet-normalised float (`transforms.normalize`)."""
    return normalize(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2))


@torch.no_grad()
def _top1(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> float:
    predictions = torch.cat([model(chunk).argmax(1) for chunk in x.split(250)])
    return float((predictions == labels).float().mean())


def _linear_probe(features: torch.Tensor, labels: torch.Tensor, classes: int) -> tuple[float, float]:
    """(train, held-out) top-1 of a logistic regression fitted on the first 2/3 of the rows."""
    cut = len(labels) * 2 // 3
    mean, std = features[:cut].mean(0), features[:cut].std(0) + 1e-6
    f = (features - mean) / std
    weight = torch.zeros(f.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=300)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(f[:cut] @ weight + bias, labels[:cut]) + 1e-3 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        right = ((f @ weight + bias).argmax(1) == labels).float()
    return float(right[:cut].mean()), float(right[cut:].mean())


def measure(weights: Path, data: Path, images: int = 1000, crops: int = 3000) -> dict:
    card = read_card(weights)
    if card.backbone != "vgg16_bn":
        raise SkipsegError(f"{weights}: a {card.backbone} file; this measures vgg16_bn files (DeconvNet's encoder)")
    size = card.input_size
    classifier = build_pretrain_classifier(card.backbone, len(CLASS_NAMES), card.width)
    classifier.load_state_dict({k: v.float() for k, v in torch.load(weights, weights_only=True).items()})
    classifier.eval()
    out: dict = {"weights": str(weights), "card_top1": card.top1, "size": size}

    for name, stored in (("heldout_stored", True), ("heldout_raw", False)):
        rendered = [render_object(0, i, size, "val", stored=stored) for i in range(images)]
        x = _normalised(np.stack([image for image, _ in rendered]))
        out[name] = _top1(classifier, x, torch.tensor([label for _, label in rendered]))

    base = open_dataset(data, "train")
    family = {name: CLASS_NAMES.index(name) for name in base.class_names[1:] if name in CLASS_NAMES}
    if len(family) != len(base.class_names) - 1:
        raise SkipsegError(f"{data}: classes.txt names classes that are not shape families: {base.class_names[1:]}")
    singles, labels = [], []
    for i in range(min(len(base), images)):
        image, mask = base.load(i)
        present = np.unique(mask[(mask != 0) & (mask != IGNORE_INDEX)])
        if len(present) == 1 and np.asarray(image).shape[:2] == (size, size):
            singles.append(np.asarray(image))
            labels.append(family[base.class_names[int(present[0])]])
    out["single_object_images"] = {"count": len(labels), "top1": _top1(
        classifier, _normalised(np.stack(singles)), torch.tensor(labels)) if labels else None}

    instances = InstanceCropDataset(base, 1.2, train_transforms(size, None, flip=False, resize=size))
    picked = torch.randperm(len(instances), generator=torch.Generator().manual_seed(0))[:crops].tolist()
    x = torch.stack([instances[i][0] for i in picked])
    crop_labels = torch.tensor([instances.samples[i].label for i in picked])
    encoder = deconvnet(base.num_classes, card.width, weights=str(weights), input_size=size).backbone.eval()
    with torch.no_grad():
        features = torch.cat([encoder(chunk)["fc7"].mean((2, 3)) for chunk in x.split(250)])
    train, held_out = _linear_probe(features, crop_labels, base.num_classes)
    out["crop_probe"] = {"crops": len(picked), "object_classes": base.num_classes - 1,
                         "chance": 1 / (base.num_classes - 1), "train_top1": train, "heldout_top1": held_out}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.transfer", description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path, help="a shape-pretrained vgg16_bn .pt file with its card")
    parser.add_argument("--data", type=Path, required=True, help="a generated dataset (skipseg data shapes)")
    parser.add_argument("--images", type=int, default=1000, help="held-out / single-object images to score")
    parser.add_argument("--crops", type=int, default=3000, help="instance crops for the linear probe")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "transfer.json")
    args = parser.parse_args(argv)
    try:
        result = measure(args.weights, args.data, args.images, args.crops)
    except SkipsegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    probe, singles = result["crop_probe"], result["single_object_images"]
    print(f"{args.weights}: held-out top-1 {result['heldout_stored']:.1%} as stored, {result['heldout_raw']:.1%} raw; "
          f"{singles['count']} single-object images of {args.data}: "
          f"{'-' if singles['top1'] is None else format(singles['top1'], '.1%')}; "
          f"fc7 linear probe on {probe['crops']} instance crops ({probe['object_classes']} classes, chance "
          f"{probe['chance']:.1%}): {probe['heldout_top1']:.1%} held-out ({probe['train_top1']:.1%} fitted)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
