"""Build a model by name, with the activation and dropout the config asks for."""
from __future__ import annotations

from typing import Callable

from torch import nn

from .alexnet import AlexNet
from .lenet import LeNet
from .resnet import ResNet18

MODELS: dict[str, Callable[..., nn.Module]] = {"lenet": LeNet, "alexnet": AlexNet, "resnet18": ResNet18}
MODEL_NAMES = tuple(MODELS)
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU, "silu": nn.SiLU, "sigmoid": nn.Sigmoid,
}
ACTIVATION_NAMES = ("default", *ACTIVATIONS)


def build_model(name: str, num_classes: int, *, activation: str = "default",
                dropout: float | None = None) -> nn.Module:
    """A fresh ``name`` model with ``num_classes`` outputs.

    ``activation="default"`` and ``dropout=None`` keep the model's own choices (sigmoid for
    LeNet, ReLU otherwise; dropout 0.5 for AlexNet, 0 otherwise), so configs only state changes.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    if activation not in ACTIVATION_NAMES:
        raise ValueError(f"unknown activation {activation!r}; valid activations: {', '.join(ACTIVATION_NAMES)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if dropout is not None and not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    kwargs: dict = {}
    if activation != "default":
        kwargs["act"] = ACTIVATIONS[activation]
    if dropout is not None:
        kwargs["dropout"] = dropout
    return MODELS[name](num_classes, **kwargs)


def build_model_from_config(config, num_classes: int) -> nn.Module:
    """The model ``config.MODEL`` describes (NAME, ACTIVATION, DROPOUT) with ``num_classes`` outputs."""
    return build_model(config.MODEL.NAME, num_classes,
                       activation=config.MODEL.ACTIVATION, dropout=config.MODEL.DROPOUT)
