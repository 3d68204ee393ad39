"""Deepfake classifiers: ``create_model(name)`` over a registry; each model carries its :class:`ModelSpec`."""
from dfdc.models.registry import MODELS, create_model, list_models, register
from dfdc.models.spec import DeepfakeModel, ModelOutput, ModelSpec, to_unit
from dfdc.models.weights import WeightsError

__all__ = ["MODELS", "DeepfakeModel", "ModelOutput", "ModelSpec", "WeightsError", "create_model", "list_models",
           "register", "to_unit"]
