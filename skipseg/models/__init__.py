"""Segmentation models: backbones with named taps + heads, built by name from the registry."""
from skipseg.models.backbones import Backbone, TapInfo
from skipseg.models.describe import describe_model
from skipseg.models.registry import build_model, list_models, model_options, register_model

__all__ = ["Backbone", "TapInfo", "build_model", "describe_model", "list_models", "model_options", "register_model"]
