"""One-logit deepfake classifiers: ``create_model(name)`` over a registry of timm backbones."""
from dfdc.models.registry import MODELS, BinaryClassifier, ModelSpec, create_model, list_models, register

__all__ = ["MODELS", "BinaryClassifier", "ModelSpec", "create_model", "list_models", "register"]
