"""Build a model by name, with the activation and dropout the config asks for."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..errors import ConfigError
from .alexnet import AlexNet
from .lenet import LeNet
from .resnet import ResNet18
from .summary import input_size_error

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
    The dropout range is the config's check (``MODEL.DROPOUT``, where a user sets it).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    if activation not in ACTIVATION_NAMES:
        raise ValueError(f"unknown activation {activation!r}; valid activations: {', '.join(ACTIVATION_NAMES)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    kwargs: dict = {}
    if activation != "default":
        kwargs["act"] = ACTIVATIONS[activation]
    if dropout is not None:
        kwargs["dropout"] = dropout
    return MODELS[name](num_classes, **kwargs)


def build_model_from_config(config, num_classes: int, device: torch.device | str | None = None) -> nn.Module:
    """The model ``config.MODEL`` describes (NAME, ACTIVATION, DROPOUT) with ``num_classes`` outputs:
    the one way from a config to a model (``fit``, ``predict``, ``summary``, the batch-size sweep).

    ConfigError before any data is read unless it takes ``DATA.IMG_SIZE`` images; with a
    ``device`` it is placed there as training runs it (``runtime.place_model``).
    """
    from ..runtime import place_model

    model = build_model(config.MODEL.NAME, num_classes,
                        activation=config.MODEL.ACTIVATION, dropout=config.MODEL.DROPOUT)
    problem = input_size_error(model, config.DATA.IMG_SIZE)
    if problem:
        raise ConfigError(f"DATA.IMG_SIZE={config.DATA.IMG_SIZE} does not suit MODEL.NAME={config.MODEL.NAME}: "
                          f"{problem}")
    return model if device is None else place_model(model, torch.device(device))
