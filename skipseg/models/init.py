"""Initialisation: ImageNet weights (torchvision's weights API or a torchvision-format file), the
fully-connected → convolution "surgery", and staged init from a trained model (FCN-32s → 16s → 8s).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from skipseg.core.checkpoint import load_checkpoint, load_error, resolve_checkpoint, safe_load
from skipseg.errors import SkipsegError, UnsafeFileError
from skipseg.models.pretrained import shapes_weights

logger = logging.getLogger(__name__)

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile


def fc_to_conv(weight: Tensor, kernel: int, in_channels: int | None = None, source: int | None = None) -> Tensor:
    """A Linear weight `[out, C*s*s]` (a classifier over an s×s map) as a k×k conv weight `[out, C, k, k]`.

    torchvision's VGG/AlexNet flatten the last feature map as (C, H, W) in `torch.flatten(x, 1)`, so
    for k = s a plain reshape lines every input up with the same channel and position: the conv
    applied to a k×k map (unpadded) equals the Linear layer applied to that map flattened (the FCN
    surgery). For k ≠ s (DeconvNet sized below 224 px, whose fc6 covers a smaller pool5 map) the
    classifier saw `AdaptiveAvgPool2d(s)` of the k×k map; that pooling is linear, so it folds into
    the kernel and the conv still computes exactly what the classifier computed at that input size.
    """
    out, n = weight.shape
    source = source or kernel
    if n % (source * source) or (in_channels is not None and n != in_channels * source * source):
        raise SkipsegError(f"a Linear layer with {n} inputs cannot become a {kernel}x{kernel} convolution over "
                           f"{in_channels or '?'} channels (it classifies a {source}x{source} map)")
    full = weight.reshape(out, n // (source * source), source, source)
    if kernel == source:
        return full
    pool = adaptive_pool_matrix(kernel, source)  # [s, k]; folded in fp32 whatever the file's storage
    return torch.einsum("ocij,ia,jb->ocab", full.float(), pool, pool).contiguous()


def adaptive_pool_matrix(size: int, out: int) -> Tensor:
    """`[out, size]`: row i averages the input cells that `AdaptiveAvgPool` gives output cell i."""
    matrix = torch.zeros(out, size)
    for i in range(out):
        start, stop = (i * size) // out, -((-(i + 1) * size) // out)
        matrix[i, start:stop] = 1.0 / (stop - start)
    return matrix


def torchvision_to_backbone(backbone: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A torchvision classifier's state_dict with keys and shapes of `backbone` (the surgery)."""
    fc = {src: (dst, k) for dst, (src, k) in backbone.torchvision_fc.items()}
    out: dict[str, Tensor] = {}
    for key, tensor in state.items():
        if key.startswith(backbone.torchvision_ignore):
            continue
        prefix, _, leaf = key.rpartition(".")
        if prefix in fc:
            dst, source = fc[prefix]
            conv = backbone.get_submodule(dst)
            # A Linear of another width stays as it is: `load_exactly` then names the first mismatch.
            if leaf == "weight" and tensor.shape[1] == conv.in_channels * source * source:
                tensor = fc_to_conv(tensor, conv.kernel_size[0], conv.in_channels, source)
            key = f"{dst}.{leaf}"
        out[key] = tensor
    return out


def plain_vgg_into_batch_norm(backbone: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """torchvision `vgg16`'s state_dict for a backbone whose `features` are `vgg16_bn`'s: the i-th
    convolution's tensors into the i-th convolution, every batch norm kept as the backbone holds it
    (initialised as the identity), as DeconvNet adds batch norm to ImageNet's VGG16."""
    convs = [i for i, layer in enumerate(backbone.features) if isinstance(layer, nn.Conv2d)]
    sources = sorted({int(k.split(".")[1]) for k, v in state.items() if k.startswith("features.") and v.dim() == 4})
    if len(sources) != len(convs):
        raise SkipsegError(f"plain VGG16 weights: {len(sources)} convolutions for the backbone's {len(convs)}")
    out = {k: v for k, v in state.items() if not k.startswith("features.")}
    for src, dst in zip(sources, convs):
        out[f"features.{dst}.weight"], out[f"features.{dst}.bias"] = state[f"features.{src}.weight"], state[f"features.{src}.bias"]
    own = backbone.state_dict()
    out.update({k: v for k, v in own.items() if k.startswith("features.") and k not in out})  # the batch norms
    return out


def load_exactly(module: nn.Module, state: Mapping[str, Tensor], source: str, keep: tuple[str, ...] = ()) -> None:
    """Load every tensor of `module` from `state`; a missing, extra or misshapen key is an error
    naming it. (BatchNorm's `num_batches_tracked` may be missing: older files lack it.) Keys that
    start with a prefix in `keep` may be missing: those layers keep their values."""
    target = module.state_dict()
    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked") and not k.startswith(keep)]
    unexpected = [k for k in state if k not in target]
    if missing or unexpected:
        raise SkipsegError(
            f"{source}: does not match the model: missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(target[key].shape):
            raise SkipsegError(
                f"{source}: {key} has shape {tuple(tensor.shape)}, the model expects {tuple(target[key].shape)} "
                "(built with another width?)"
            )
    module.load_state_dict(state, strict=False)


def hub_cache_path(weights_name: str) -> Path:
    """Where torchvision's weights API caches `weights_name` (e.g. "VGG16_Weights.IMAGENET1K_V1")."""
    from torchvision.models import get_weight

    url = get_weight(weights_name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def imagenet_state_dict(weights_name: str, progress: bool = True) -> dict[str, Tensor]:
    """torchvision's ImageNet state_dict from the hub cache, downloading it if it is not there."""
    from torchvision.models import get_weight

    weights = get_weight(weights_name)
    path = hub_cache_path(weights_name)
    cached = path.is_file()
    try:
        # torch.hub's default is weights_only=False: a file dropped into the cache could run code
        return weights.get_state_dict(progress=progress, weights_only=True)
    except Exception as exc:  # URLError, HTTPError, OSError, a corrupt or unsafe file: all end the same way
        refusal = load_error(path, "weights file", exc)
        if isinstance(refusal, UnsafeFileError):
            raise UnsafeFileError(f"{refusal}; delete it") from None
        if cached:
            detail = (str(exc).strip().splitlines() or [""])[0]
            raise SkipsegError(f"{path}: cached {weights_name} weights are unreadable ({detail}); delete it") from None
        raise SkipsegError(
            f"ImageNet weights {weights_name} are not cached at {path} and could not be downloaded "
            f"({type(exc).__name__}: {exc}); put the file {path.name} (from {weights.url}) there, "
            "or pass weights=FILE with a torchvision-format state_dict"
        ) from None


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A torchvision-format state_dict file (e.g. `torch.save(torchvision.models.vgg16().state_dict())`)."""
    path = Path(path)
    if not path.is_file():
        raise SkipsegError(f"{path}: weights file not found")
    state = safe_load(path, "state_dict")
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise SkipsegError(f"{path}: not a state_dict (a mapping of parameter names to tensors)")
    return dict(state)


def _strip_wrappers(key: str) -> str:
    for prefix in _WRAPPER_PREFIXES:
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def _layers(keys: list[str]) -> str:
    """`backbone.features.0.weight, head.score_fr.bias, …` → "backbone (30 tensors), head.score_fr (2
    tensors)": the backbone as one, a head by its layers (which of them staged training copies)."""
    counts: dict[str, int] = {}
    for key in keys:
        parts = key.split(".")
        top = ".".join(parts[:2]) if parts[0] == "head" and len(parts) > 2 else parts[0]
        counts[top] = counts.get(top, 0) + 1
    return ", ".join(f"{name} ({n} tensor{'s' * (n != 1)})" for name, n in counts.items()) or "nothing"


def _checkpoint_classes(checkpoint: Mapping) -> int | None:
    """The class count the checkpoint's run was configured with (None when it does not say)."""
    config = checkpoint.get("config")
    model = config.get("model") if isinstance(config, Mapping) else None
    classes = model.get("num_classes") if isinstance(model, Mapping) else None
    return classes if isinstance(classes, int) and not isinstance(classes, bool) else None


def _class_shaped(there: tuple[int, ...], here: tuple[int, ...], classes_there: int | None,
                  classes_here: int | None) -> bool:
    """Whether two shapes differ only in axes that hold the class count, `classes_there` in the
    checkpoint and `classes_here` in this model (a score or class-to-class upsampling layer)."""
    if classes_there is None or classes_here is None or classes_there == classes_here or len(there) != len(here):
        return False
    differ = [(a, b) for a, b in zip(there, here) if a != b]
    return bool(differ) and all(pair == (classes_there, classes_here) for pair in differ)


def init_from_checkpoint(model: nn.Module, run_or_checkpoint: str | Path) -> dict[str, list[str]]:
    """Copy every tensor whose name and shape match from a trained model (staged training).

    Layers that the source lacks (FCN-16s's score_pool4 when starting from an FCN-32s) keep their
    initial values (zero for score layers, bilinear for upsampling). So do the layers shaped by the
    class count when the checkpoint's run had another `num_classes` (fine-tuning a model trained on
    another label set, as VOC training starts from a COCO model): they are listed as
    `reinitialised`. Any other layer present in both with a different shape (another width or
    input size) is an error naming it. Returns `{"copied", "kept", "reinitialised", "ignored"}` key
    lists, also logged.
    """
    source = resolve_checkpoint(run_or_checkpoint)
    checkpoint = load_checkpoint(source)
    state = {_strip_wrappers(k): v for k, v in checkpoint["model"].items()}
    classes_there, classes_here = _checkpoint_classes(checkpoint), getattr(model, "num_classes", None)
    target = model.state_dict()
    copied, kept, reinitialised = [], [], []
    for key, tensor in target.items():
        if key not in state:
            kept.append(key)
        elif _class_shaped(tuple(state[key].shape), tuple(tensor.shape), classes_there, classes_here):
            reinitialised.append(key)
        elif tuple(state[key].shape) != tuple(tensor.shape):
            raise SkipsegError(
                f"{source}: {key} has shape {tuple(state[key].shape)} there but {tuple(tensor.shape)} in "
                "this model (built with another width, num_classes or input_size? DeconvNet's fc6 kernel is "
                "input_size / 32)"
            )
        else:
            copied.append(key)
    ignored = [k for k in state if k not in target]
    if not copied:
        raise SkipsegError(f"{source}: no layer matches this model by name (is it a model of another family?)")
    model.load_state_dict({k: state[k] for k in copied}, strict=False)
    logger.info("init_from %s: copied %s", source, _layers(copied))
    if kept:
        logger.info("init_from %s: kept initial values of %s", source, _layers(kept))
    if reinitialised:
        logger.info("init_from %s: %d classes there, %d here: initial values for %s", source, classes_there,
                    classes_here, _layers(reinitialised))
    if ignored:
        logger.info("init_from %s: not used from the checkpoint: %s", source, _layers(ignored))
    return {"copied": copied, "kept": kept, "reinitialised": reinitialised, "ignored": ignored}


def initialize(
    model: nn.Module,
    *,
    width: float,
    pretrained: str | None = None,
    weights: str | Path | None = None,
    init_from: str | Path | None = None,
) -> dict[str, Any] | None:
    """Apply the common init options of every builder to `model` (with `model.backbone`).

    `pretrained="imagenet"` (width 1.0 only), `pretrained="shapes"` (the shipped file of the
    backbone's architecture and width) and `weights=FILE` load a torchvision classifier into the backbone; `init_from` copies from a trained model and supersedes both (the backbone comes
    from the checkpoint anyway).
    """
    if pretrained and weights:
        raise SkipsegError(f"give either pretrained={pretrained} or weights=FILE, not both")
    if init_from is not None:
        if pretrained or weights:
            logger.info("init_from %s: not loading ImageNet weights, the checkpoint supplies the backbone", init_from)
        return init_from_checkpoint(model, init_from)
    backbone = model.backbone
    if pretrained == "shapes":
        weights = shapes_weights(backbone.torchvision_arch, width)
    elif pretrained:
        # A backbone whose paper network is plain VGG16 with batch norm added (DeconvNet) names those
        # weights `paper_weights`: `imagenet` loads them, `imagenet_bn` torchvision's VGG16-BN instead.
        paper = getattr(backbone, "paper_weights", None)
        if pretrained not in ("imagenet", "imagenet_bn") or (pretrained == "imagenet_bn" and paper is None):
            raise SkipsegError(f"pretrained={pretrained!r}: expected 'imagenet' (torchvision's weights), "
                               "'imagenet_bn' (deconvnet: VGG16-BN's instead of the paper's VGG16) or "
                               "'shapes' (the shipped shape-pretrained classifiers)")
        if backbone.torchvision_weights is None:
            raise SkipsegError(f"{type(backbone).__name__} has no ImageNet weights")
        if width != 1.0:
            raise SkipsegError(f"pretrained={pretrained} needs width=1.0 (the ImageNet network), got width={width}")
        name = paper if pretrained == "imagenet" and paper else backbone.torchvision_weights
        state = imagenet_state_dict(name)
        if name == paper:
            state = plain_vgg_into_batch_norm(backbone, state)
        load_exactly(backbone, torchvision_to_backbone(backbone, state), name, backbone.torchvision_extra)
        logger.info("backbone initialised from %s", name)
    if weights is not None:
        state = read_state_dict(weights)
        load_exactly(backbone, torchvision_to_backbone(backbone, state), str(weights), backbone.torchvision_extra)
        logger.info("backbone initialised from %s", weights)
    return None
