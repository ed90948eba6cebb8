"""Model sizes, shapes, options and summaries."""
import pytest
import torch
import torchvision
from torch import nn

from nmeplib.config import load_config
from nmeplib.models import (MODEL_NAMES, build_model, build_model_from_config, count_parameters,
                            format_summary, model_summary)
from nmeplib.models.summary import input_size_error

ACT_TYPES = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU, "silu": nn.SiLU, "sigmoid": nn.Sigmoid}


def module_types(model: nn.Module) -> set[type]:
    return {type(m) for m in model.modules()}


@pytest.fixture(scope="module")
def alexnet() -> nn.Module:
    return build_model("alexnet", 10)


@pytest.mark.parametrize("name, classes, expected", [
    ("lenet", 10, 83_126), ("resnet18", 10, 11_173_962), ("resnet18", 200, 11_271_432),
])
def test_parameter_counts(name, classes, expected):
    assert count_parameters(build_model(name, classes)) == expected


def test_alexnet_matches_torchvision(alexnet):
    reference = torchvision.models.alexnet(num_classes=10)
    assert count_parameters(alexnet) == count_parameters(reference) == 57_044_810
    alexnet.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 70, 70)
    reference.eval(), alexnet.eval()
    with torch.no_grad():
        torch.testing.assert_close(alexnet(x), reference(x))


def test_trainable_only():
    model = build_model("lenet", 10)
    model.features.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 83_126 - 456 - 2_416


@pytest.mark.parametrize("name, size, classes", [
    ("lenet", 32, 10), ("alexnet", 64, 10), ("alexnet", 96, 200),
    ("resnet18", 32, 10), ("resnet18", 64, 200), ("resnet18", 96, 200),
])
def test_forward_shapes(name, size, classes, request):
    model = request.getfixturevalue("alexnet") if (name, classes) == ("alexnet", 10) else build_model(name, classes)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, classes)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_activation_option(name):
    default = build_model(name, 10)
    own = nn.Sigmoid if name == "lenet" else nn.ReLU
    n_acts = sum(isinstance(m, own) for m in default.modules())
    assert n_acts > 0
    for activation, kind in ACT_TYPES.items():
        model = build_model(name, 10, activation=activation)
        assert sum(isinstance(m, kind) for m in model.modules()) == n_acts
        others = set(ACT_TYPES.values()) - {kind}
        assert not module_types(model) & others, activation
        assert count_parameters(model) == count_parameters(default)


def test_dropout_option():
    assert nn.Dropout not in module_types(build_model("lenet", 10))
    lenet = build_model("lenet", 10, dropout=0.3)
    drops = [m for m in lenet.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 2 and all(d.p == 0.3 for d in drops)
    assert count_parameters(lenet) == 83_126
    assert nn.Dropout not in module_types(build_model("resnet18", 10))
    assert build_model("resnet18", 10, dropout=0.2).dropout.p == 0.2
    alex = build_model("alexnet", 10, dropout=0.1)
    assert [m.p for m in alex.modules() if isinstance(m, nn.Dropout)] == [0.1, 0.1]


def test_alexnet_default_dropout(alexnet):
    assert [m.p for m in alexnet.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5]


@pytest.mark.parametrize("kwargs, bad", [
    ({"name": "vgg16"}, "vgg16"), ({"activation": "tanh"}, "tanh"),
])
def test_bad_arguments(kwargs, bad):
    args = {"name": "lenet", "num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=bad) as info:
        build_model(args.pop("name"), args.pop("num_classes"), **args)
    if "name" in kwargs:
        assert all(n in str(info.value) for n in MODEL_NAMES)
    if "activation" in kwargs:
        assert all(a in str(info.value) for a in ACT_TYPES)


def test_build_from_config():
    config = load_config(overrides=["MODEL.NAME=resnet18", "MODEL.ACTIVATION=gelu", "MODEL.DROPOUT=0.25"])
    model = build_model_from_config(config, 200)
    assert nn.GELU in module_types(model) and nn.ReLU not in module_types(model)
    assert model.dropout.p == 0.25 and model.fc.out_features == 200


def test_summary_rows(alexnet):
    rows = model_summary(alexnet, (3, 70, 70), batch_size=2)
    assert all(set(r) == {"name", "type", "output_shape", "params"} for r in rows)
    assert rows[0]["output_shape"] == (2, 64, 16, 16)
    assert rows[-1]["output_shape"] == (2, 10)
    assert [r["output_shape"] for r in rows if r["name"] == "avgpool"] == [(2, 256, 6, 6)]
    assert [r["output_shape"] for r in rows if r["type"] == "Flatten"] == [(2, 9216)]
    assert sum(r["params"] for r in rows) == 57_044_810
    lenet = build_model("lenet", 10)
    rows = model_summary(lenet)
    assert [r["output_shape"] for r in rows if r["type"] == "Flatten"] == [(1, 576)]
    assert format_summary(rows).splitlines()[-1] == "Total parameters: 83,126"


def test_resnet18_keeps_32_px_through_the_stem_and_halves_it_in_layers_2_to_4():
    rows = model_summary(build_model("resnet18", 10), (3, 32, 32))
    output = {r["name"].split(".")[0]: r["output_shape"] for r in rows}   # each stage's last layer
    assert output == {"stem": (1, 64, 32, 32), "layer1": (1, 64, 32, 32), "layer2": (1, 128, 16, 16),
                      "layer3": (1, 256, 8, 8), "layer4": (1, 512, 4, 4), "avgpool": (1, 512, 1, 1),
                      "flatten": (1, 512), "dropout": (1, 512), "fc": (1, 10)}


def test_summary_table_aligns_columns_and_counts_a_reused_layer_once():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.flat, self.fc = nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 144)

        def forward(self, x):
            return self.fc(self.fc(self.flat(self.conv(x))))

    assert format_summary(model_summary(Tied(), (3, 8, 8), batch_size=2)).splitlines() == [
        "Layer  Type     Output shape  Params",
        "------------------------------------",
        "conv   Conv2d   (2, 4, 6, 6)     112",
        "flat   Flatten  (2, 144)           0",
        "fc     Linear   (2, 144)      20,880",
        "fc     Linear   (2, 144)      20,880",
        "------------------------------------",
        "Total parameters: 20,992",
    ]


def test_summary_restores_modes_and_stats():
    model = build_model("resnet18", 10)
    model.train()
    model.layer1.eval()
    before = model.stem[1].running_mean.clone()
    model_summary(model, (3, 32, 32), batch_size=2)
    assert model.training and not model.layer1.training and model.layer2.training
    torch.testing.assert_close(model.stem[1].running_mean, before)


def test_input_size_error(alexnet):
    alexnet.train()
    message = input_size_error(alexnet, 32)
    assert message is not None and "AlexNet" in message and "63" in message
    assert input_size_error(alexnet, 63) is None
    assert alexnet.training
    assert "32" in input_size_error(build_model("lenet", 10), 28)
    assert input_size_error(build_model("resnet18", 200), 64) is None
