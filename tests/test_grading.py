"""``python -m nmeplib check``: the solved models pass, planted bugs are named, stubs read as to-do."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from torch import Tensor, nn

from nmeplib import cli, grading
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
    assert grading.main(["resnet18", "--parts", "params", "forward", "--timeout", "0"]) == 1
    out = capsys.readouterr().out
    assert "resnet18 forward: layer2.1.conv1 (Conv2d" in out and "receives a different input" in out
    assert "resnet18  forward  FAIL" in out and "1/2 passed" in out


def test_stub_reads_as_not_implemented_once(monkeypatch, capsys):
    plant(monkeypatch, "resnet18", ResNetStub)
    results = grading.grade("resnet18", ("params", "shapes"))
    assert [r.status for r in results] == ["todo", "todo"]
    report = grading.format_results(results)
    assert report.count("not implemented yet: ResNet18.__init__: write me") == 1


def test_parts_failing_alike_share_one_line_naming_them():
    results = [grading.Result("alexnet", "params", "FAIL", "timed out after 1 s"),
               grading.Result("alexnet", "shapes", "pass"),
               grading.Result("alexnet", "grads", "FAIL", "zero gradient in features.0.bias"),
               grading.Result("alexnet", "forward", "FAIL", "timed out after 1 s"),
               grading.Result("resnet18", "forward", "FAIL", "timed out after 1 s")]
    lines = grading.format_results(results).splitlines()
    assert lines[:4] == ["alexnet params: timed out after 1 s (also: forward)",
                         "alexnet grads: zero gradient in features.0.bias",
                         "resnet18 forward: timed out after 1 s", ""]
    assert lines[-1] == "1/5 passed"


def test_check_grades_both_models_by_default_under_the_time_limit_given(monkeypatch, capsys):
    calls = []

    def isolated(name, parts, timeout):
        calls.append(("worker", name, parts, timeout))
        return [grading.Result(name, part, "pass") for part in parts]

    def here(name, parts):
        calls.append(("this process", name, parts))
        return [grading.Result(name, part, "pass") for part in parts]
    monkeypatch.setattr(grading, "grade_isolated", isolated)
    monkeypatch.setattr(grading, "grade", here)
    assert grading.main(["--parts", "params", "grads", "--timeout", "7"]) == 0
    assert "4/4 passed" in capsys.readouterr().out
    assert grading.main(["alexnet", "--parts", "shapes", "--timeout", "0"]) == 0
    assert calls == [("worker", "alexnet", ("params", "grads"), 7.0), ("worker", "resnet18", ("params", "grads"), 7.0),
                     ("this process", "alexnet", ("shapes",))]


def test_unknown_model():
    with pytest.raises(ValueError, match="choose from alexnet, resnet18, all"):
        grading.check("vgg")


ROOT = Path(__file__).resolve().parents[1]
FORWARD = {  # the last line of each model's forward, which the student files below replace
    "alexnet": ("alexnet.py", "        return self.classifier(self.flatten(self.avgpool(self.features(x))))\n"),
    "resnet18": ("resnet.py", "        return self.fc(self.dropout(self.flatten(self.avgpool(x))))\n"),
}


@pytest.fixture(scope="module")
def reference() -> str:
    """The stored reference a release ships, computed from the solutions."""
    return grading.reference_json()


def student_repo(root: Path, reference: str, forward: str | None = None, append: str = "",
                 model: str = "alexnet") -> Path:
    """A copy of nmeplib with a stored reference, whose ``model`` has ``forward`` as the end of its
    ``forward`` and ``append`` at the end of its file."""
    shutil.copytree(ROOT / "nmeplib", root / "nmeplib", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "nmeplib" / "grading_reference.json").write_text(reference)
    file, last_line = FORWARD[model]
    source = root / "nmeplib" / "models" / file
    text = source.read_text()
    assert last_line in text
    if forward is not None:
        text = text.replace(last_line, "".join(f"        {line}\n" for line in forward.splitlines()))
    source.write_text(text + append)
    return root


def check_in(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m nmeplib check ARGS`` importing ``repo``'s nmeplib (run as it is written: under
    mutmut, no mutant is switched on in the copy)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("MUTANT_UNDER_TEST", None)
    return subprocess.run([sys.executable, "-m", "nmeplib", "check", *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=90)


@pytest.mark.timeout(90)
def test_endless_forward_times_out_and_the_next_part_still_runs(tmp_path, reference):
    repo = student_repo(tmp_path, reference, forward="while True:\n    pass", model="resnet18")
    start = time.monotonic()
    result = check_in(repo, "resnet18", "--parts", "shapes", "params", "--timeout", "2")
    assert result.returncode == 1, result.stderr
    assert "resnet18 shapes: timed out after 2 s" in result.stdout
    assert "resnet18  shapes   FAIL" in result.stdout and "resnet18  params   pass" in result.stdout
    assert "1/2 passed" in result.stdout and "Traceback" not in result.stderr
    assert time.monotonic() - start < 60


@pytest.mark.timeout(90)
@pytest.mark.parametrize("body, message", [
    ("import sys\nsys.exit(0)", "sys.exit(0) was called (resnet.py:"),
    ("raise KeyboardInterrupt", "KeyboardInterrupt was raised (resnet.py:"),
    ("import os\nos._exit(3)", "the grading process ended with exit status 3"),
])
def test_leaving_forward_fails_that_part_only(tmp_path, reference, body, message):
    repo = student_repo(tmp_path, reference, forward=body, model="resnet18")
    result = check_in(repo, "resnet18", "--parts", "shapes", "params")
    assert result.returncode == 1, result.stderr
    assert f"resnet18 shapes: {message}" in result.stdout
    assert "resnet18  shapes   FAIL" in result.stdout and "resnet18  params   pass" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(90)
def test_syntax_error_names_file_and_line(tmp_path, reference):
    repo = student_repo(tmp_path, reference, append="x = = 1\n")
    line = len((repo / "nmeplib" / "models" / "alexnet.py").read_text().splitlines())
    result = check_in(repo, "alexnet", "--parts", "params", "shapes")
    assert result.returncode == 1, result.stderr
    problems = [line for line in result.stdout.splitlines() if line.startswith("alexnet ") and ":" in line]
    assert problems == [f"alexnet params: SyntaxError in {Path('nmeplib', 'models', 'alexnet.py')} "
                        f"line {line}: invalid syntax: x = = 1 (also: shapes)"]
    assert "alexnet   shapes   FAIL" in result.stdout and "0/2 passed" in result.stdout
    assert "Traceback" not in result.stderr


class AlexNetNonFinite(AlexNet):
    value = float("nan")

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) * self.value


class AlexNetInfiniteInside(AlexNet):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.features[1] = Infinite()


class Infinite(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.relu() / 0.0


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_logits_fail_shapes_and_forward(monkeypatch, value):
    monkeypatch.setattr(AlexNetNonFinite, "value", value)
    plant(monkeypatch, "alexnet", AlexNetNonFinite)
    shapes, forward = grading.grade("alexnet", ("shapes", "forward"))
    assert shapes.status == forward.status == "FAIL"
    assert shapes.message.startswith("input 2x3x63x63 gives NaN or infinite logits")
    assert forward.message.startswith("every layer matches but the logits hold NaN or infinite values")


def test_non_finite_activation_names_the_layer_after_it(monkeypatch):
    plant(monkeypatch, "alexnet", AlexNetInfiniteInside)
    message = grading.check_forward("alexnet", grading.SPECS["alexnet"], grading.load_reference("alexnet"))
    assert message.startswith("features.3 (Conv2d") and "receives NaN or infinite values" in message


@pytest.mark.parametrize("text, problem", [
    ('{"alexnet": {"params": ', "not valid JSON (line 1, column 24: Expecting value)"),
    ('{"resnet18": {}}', "has no reference for alexnet"),
    ('{"alexnet": {"params": {}}}', "has no reference for alexnet"),
    ("\xff\xfe", "not valid JSON (not UTF-8 text)"),
])
def test_corrupt_reference_is_one_error_line(monkeypatch, capsys, tmp_path, text, problem):
    path = tmp_path / "grading_reference.json"
    path.write_bytes(text.encode("latin-1"))
    monkeypatch.setattr(grading, "REFERENCE_FILE", path)
    grading.load_reference.cache_clear()
    try:
        assert cli.main(["check", "alexnet", "--parts", "params"]) == 2
    finally:
        grading.load_reference.cache_clear()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: ") and problem in err


@pytest.fixture
def points_file(monkeypatch, tmp_path):
    """A staff points file in ``tmp_path`` in place of the shipped one (read afresh)."""
    path = tmp_path / "grading_points.json"
    monkeypatch.setattr(grading, "POINTS_FILE", path)
    grading._points_table.cache_clear()
    yield path
    grading._points_table.cache_clear()


def test_each_part_is_worth_what_the_points_file_says_else_the_default(points_file):
    points_file.write_text(json.dumps({"alexnet": {"forward": 2.5, "train": 0}, "resnet18": {"params": 3}}))
    worth = {(model, part): grading.points(model, part) for model in ("alexnet", "resnet18") for part in grading.PARTS}
    assert worth == {("alexnet", "params"): 1.0, ("alexnet", "shapes"): 1.0, ("alexnet", "grads"): 1.0,
                     ("alexnet", "forward"): 2.5, ("alexnet", "train"): 0.0,
                     ("resnet18", "params"): 3.0, ("resnet18", "shapes"): 1.0, ("resnet18", "grads"): 1.0,
                     ("resnet18", "forward"): 1.0, ("resnet18", "train"): 1.0}


def test_without_a_points_file_every_part_is_worth_the_default(points_file):
    assert {grading.points(model, part) for model in grading.SPECS for part in grading.PARTS} == {1.0}


@pytest.mark.parametrize("text", ['{"alexnet": {"forward": -1}}', '{"alexnet": 2}', "{not json"])
def test_a_damaged_points_file_is_a_grading_error_naming_it(points_file, text):
    points_file.write_text(text)
    with pytest.raises(grading.GradingError, match=rf"^{re.escape(str(points_file))}: (expected|not a points file)"):
        grading.points("alexnet", "params")
