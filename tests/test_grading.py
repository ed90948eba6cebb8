"""``python -m nmeplib check``: the solved models pass, planted bugs are named, stubs read as to-do."""
from __future__ import annotations

import pytest
from torch import nn

from nmeplib import grading
from nmeplib.models import build as model_build
from nmeplib.models.alexnet import AlexNet
from nmeplib.models.resnet import ResNet18


def plant(monkeypatch, name: str, cls: type) -> None:
    """Build ``cls`` for ``name``; the reference (cached) still comes from the solution."""
    grading.load_reference(name)
    monkeypatch.setitem(model_build.MODELS, name, cls)


class AlexNetMissingReLU(AlexNet):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.features[1] = nn.Identity()


class AlexNetWrongChannels(AlexNet):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.features[3] = nn.Conv2d(64, 190, kernel_size=5, padding=2)
        self.features[6] = nn.Conv2d(190, 384, kernel_size=3, padding=1)


class ResNetNoBlockActivation(ResNet18):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.layer2[0].act2 = nn.Identity()


class ResNetStub(ResNet18):
    def __init__(self, *args, **kwargs) -> None:
        raise NotImplementedError("ResNet18.__init__: write me")


def test_reference_parameter_counts():
    assert grading.load_reference("alexnet")["params"] == {"10": 57_044_810, "200": 57_823_240}
    assert grading.load_reference("resnet18")["params"] == {"10": 11_173_962, "200": 11_271_432}


def test_solved_resnet_passes(capsys):
    assert grading.main(["resnet18", "--parts", "params", "shapes", "grads", "forward"]) == 0
    assert "4/4 passed" in capsys.readouterr().out


def test_missing_relu_names_the_layer_after_it(monkeypatch):
    plant(monkeypatch, "alexnet", AlexNetMissingReLU)
    assert grading.check_params("alexnet", grading.load_reference("alexnet")) == ""
    message = grading.check_forward("alexnet", grading.SPECS["alexnet"], grading.load_reference("alexnet"))
    assert message.startswith("features.3 (Conv2d") and "receives a different input" in message
    assert "activation" in message


def test_wrong_channel_count_names_tensor_and_count(monkeypatch):
    plant(monkeypatch, "alexnet", AlexNetWrongChannels)
    message = grading.check_params("alexnet", grading.load_reference("alexnet"))
    assert "expected 57,044,810" in message
    assert "features.3.weight has shape (190, 64, 5, 5)" in message and "(192, 64, 5, 5)" in message


def test_missing_block_activation_fails_cli(monkeypatch, capsys):
    plant(monkeypatch, "resnet18", ResNetNoBlockActivation)
    assert grading.main(["resnet18", "--parts", "params", "forward"]) == 1
    out = capsys.readouterr().out
    assert "resnet18 forward: layer2.1.conv1 (Conv2d" in out and "receives a different input" in out
    assert "resnet18  forward  FAIL" in out and "1/2 passed" in out


def test_stub_reads_as_not_implemented_once(monkeypatch, capsys):
    plant(monkeypatch, "resnet18", ResNetStub)
    results = grading.grade("resnet18", ("params", "shapes"))
    assert [r.status for r in results] == ["todo", "todo"]
    report = grading.format_results(results)
    assert report.count("not implemented yet: ResNet18.__init__: write me") == 1


def test_unknown_model():
    with pytest.raises(ValueError, match="choose from alexnet, resnet18, all"):
        grading.check("vgg")
