"""skipseg: train, evaluate, compare and explain semantic segmentation networks.

Importing the package is cheap: the functions below import torch and the models on first call.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "build_model", "describe_model", "list_models"]


def list_models() -> dict[str, str]:
    """`{name: one-line description}` of every registered model."""
    from skipseg.models.registry import list_models as _list_models

    return _list_models()


def build_model(name: str, **options: Any):
    """Build model `name` (e.g. `build_model("fcn8s", num_classes=5, width=0.25)`); see `skipseg models`."""
    from skipseg.models.registry import build_model as _build_model

    return _build_model(name, **options)


def describe_model(name: str, size: tuple[int, int] = (224, 224), **options: Any) -> dict[str, Any]:
    """Parameter count, output shape and backbone taps of model `name` at input size `size`."""
    from skipseg.models.describe import describe_model as _describe_model

    return _describe_model(name, size=size, **options)
