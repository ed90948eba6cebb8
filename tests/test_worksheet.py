"""``python -m nmeplib worksheet``: measured regions rewritten from a results folder, the same
bytes every time, nothing outside the regions touched."""
import json
from pathlib import Path

import pytest

from nmeplib.course import worksheet as ws
from nmeplib.course.release import ANSWER_BEGIN, ANSWER_END

ROOT = Path(__file__).resolve().parents[1]
MACHINE = {"device": "NVIDIA H100 80GB HBM3", "torch": "2.11.0+cu130", "python": "3.12", "host": "h",
           "date": "2026-11-28"}


def _history(epochs, start=30.0):
    return [{"epoch": e, "lr": 1e-3, "train_loss": 2.0 / e, "train_acc": start + 5 * e, "val_loss": 1.9 / e,
             "val_acc": start + 4 * e, "train_time_s": 1.0, "val_time_s": 0.1, "train_img_per_s": 50000.0 + e,
             "peak_mem_mb": 1300.0} for e in range(1, epochs + 1)]


def _run(model, epochs, **settings):
    history = _history(epochs)
    return {"best_val_acc": history[-1]["val_acc"], "best_epoch": epochs, "final_val_acc": history[-1]["val_acc"],
            "epochs": epochs, "train_time_s": float(epochs), "num_classes": 10, "history": history,
            "settings": {"model": model, "dataset": "cifar10", "img_size": 70, "batch_size": 256, "lr": 3e-4,
                         "augment": "course", **settings}}


def _results(tmp_path, smoke=False):
    out = tmp_path / "results"
    def write(name, runs, tables=None):
        (out / name).mkdir(parents=True)
        (out / name / "results.json").write_text(json.dumps(
            {"experiment": name, "smoke": smoke, "machine": MACHINE, "runs": runs, "tables": tables or {},
             "figures": []}))
    write("03_training", {"runs/lenet": _run("lenet", 3), "runs/alexnet": _run("alexnet", 3)})
    lr_rows = [{"name": f"lr={v}", "TRAIN.LR": v, "best_val_acc": "42.5", "final_val_acc": "41.0", "best_epoch": "3",
                "epochs": "3", "time_per_epoch_s": "1.2", "total_time_s": "3.6", "status": "ran"}
               for v in ("0.0001", "0.0003")]
    throughput = [{"batch_size": str(b), "img_per_s": str(1000.0 * b), "step_ms": "2.0", "peak_mem_mb": "100",
                   "oom": "False"} for b in (1, 2, 4)] + [{"batch_size": "8", "img_per_s": "", "step_ms": "",
                                                            "peak_mem_mb": "", "oom": "True"}]
    write("05_sweeps", {f"runs/lr/lr={v}": _run("alexnet", 3) for v in ("0.0001", "0.0003")},
          {"runs/lr.csv": lr_rows, "runs/throughput.csv": throughput})
    return out


WORKSHEET = """# Title

## 5.1 Curves

<!-- BEGIN ANSWER -->
Prose before.

<!-- BEGIN RESULTS training -->
old table
<!-- END RESULTS training -->

Prose after, untouched.
<!-- END ANSWER -->

## 5.2

<!-- BEGIN ANSWER -->
<!-- BEGIN RESULTS lr -->
old lr table
<!-- END RESULTS lr -->
<!-- BEGIN RESULTS throughput -->
old throughput
<!-- END RESULTS throughput -->
<!-- END ANSWER -->

## 6.0

<!-- BEGIN ANSWER -->
<!-- BEGIN RESULTS resnet -->
kept: no ResNet run in the folder
<!-- END RESULTS resnet -->
<!-- END ANSWER -->
"""


def _outside(text):
    return ws.REGION.sub(lambda m: m.group(1) + m.group(4), text)


def test_regeneration_rewrites_only_marked_regions_and_is_deterministic(tmp_path):
    out = _results(tmp_path)
    sheet = tmp_path / "worksheet.md"
    sheet.write_text(WORKSHEET)
    fates = ws.regenerate(out, sheet)
    first = sheet.read_text()
    assert fates["resnet"].startswith("kept") and "kept: no ResNet run in the folder" in first
    assert _outside(first) == _outside(WORKSHEET)          # not a byte outside the regions
    assert "old table" not in first and "old lr table" not in first
    assert "NVIDIA H100 80GB HBM3, torch 2.11.0+cu130, 2026-11-28" in first
    assert "| LeNet (sigmoid) | 3 |" in first and "![LeNet and AlexNet curves](worksheet_figures/training.png)" in first
    assert "Largest batch that fits: **4**." in first and "out of memory" in first
    figures = {p.name: p.read_bytes() for p in (tmp_path / ws.FIGURES).glob("*.png")}
    assert set(figures) == {"training.png", "lr.png", "throughput.png"}
    assert sum(len(b) for b in figures.values()) < 300_000
    ws.regenerate(out, sheet)
    assert sheet.read_text() == first
    assert {p.name: p.read_bytes() for p in (tmp_path / ws.FIGURES).glob("*.png")} == figures


def test_smoke_results_are_labelled(tmp_path):
    out = _results(tmp_path, smoke=True)
    sheet = tmp_path / "worksheet.md"
    sheet.write_text(WORKSHEET)
    ws.regenerate(out, sheet)
    assert sheet.read_text().count("SMOKE MODE") == 3


def test_bad_regions_and_folders_are_one_error(tmp_path):
    sheet = tmp_path / "worksheet.md"
    sheet.write_text("<!-- BEGIN RESULTS training -->\nno end\n")
    with pytest.raises(ws.WorksheetError, match="not closed"):
        ws.regenerate(_results(tmp_path), sheet)
    sheet.write_text("<!-- BEGIN RESULTS nope -->\n<!-- END RESULTS nope -->\n")
    with pytest.raises(ws.WorksheetError, match="unknown RESULTS region"):
        ws.regenerate(tmp_path / "results", sheet)
    sheet.write_text(WORKSHEET)
    with pytest.raises(ws.WorksheetError, match="no such results folder"):
        ws.regenerate(tmp_path / "missing", sheet)


def test_the_worksheet_regions_are_known_and_inside_answers():
    text = (ROOT / "worksheet.md").read_text()
    names = ws.regions_in(text)
    assert set(names) == set(ws.REGIONS)
    for match in ws.REGION.finditer(text):
        before = text[:match.start()]
        assert before.rfind(ANSWER_BEGIN) > before.rfind(ANSWER_END), match.group("name")
        assert ANSWER_END not in match.group(0) and ANSWER_BEGIN not in match.group(0)


def test_regions_limits_the_rewrite(tmp_path):
    out = _results(tmp_path)
    sheet = tmp_path / "worksheet.md"
    sheet.write_text(WORKSHEET)
    fates = ws.regenerate(out, sheet, regions=["lr"])
    text = sheet.read_text()
    assert fates["training"] == "kept (not in --regions)" and "old table" in text and "old lr table" not in text
    assert [p.name for p in (tmp_path / ws.FIGURES).glob("*.png")] == ["lr.png"]
    with pytest.raises(ws.WorksheetError, match="unknown region"):
        ws.regenerate(out, sheet, regions=["nope"])


def _damage(out, name, change):
    path = out / name / "results.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("change, says", [
    (lambda d: d.clear() or d.update({"x": 1}), r"no 'experiment'"),
    (lambda d: d.pop("runs"), r"no 'runs'"),
    (lambda d: d.update(runs=[1, 2]), r"'runs' must be a mapping, got a list"),
    (lambda d: d["runs"]["runs/lenet"].pop("best_val_acc"), r"run 'runs/lenet' has no 'best_val_acc'"),
    (lambda d: d["runs"]["runs/lenet"].update(epochs="three"), r"run 'runs/lenet': 'epochs' must be a number"),
    (lambda d: d["runs"]["runs/lenet"].update(history={}), r"run 'runs/lenet': 'history' must be a list"),
    (lambda d: d["runs"]["runs/lenet"]["history"][1].pop("val_acc"),
     r"run 'runs/lenet': history row 2 has no 'val_acc'"),
    (lambda d: d["runs"]["runs/lenet"].update(settings=None), r"run 'runs/lenet': 'settings' must be a mapping"),
    (lambda d: d["runs"]["runs/lenet"].update(history=[]), r"run 'runs/lenet' has no history.*curves"),
    (lambda d: d.update(tables={"runs/x.csv": {"a": 1}}), r"table 'runs/x.csv' must be a list of rows"),
])
def test_a_malformed_results_file_is_one_error_naming_it(tmp_path, change, says):
    out = _results(tmp_path)
    path = _damage(out, "03_training", change)
    sheet = tmp_path / "worksheet.md"
    sheet.write_text(WORKSHEET)
    with pytest.raises(ws.WorksheetError, match=rf"^{path}: .*{says}"):
        ws.regenerate(out, sheet)
    assert sheet.read_text() == WORKSHEET


@pytest.mark.parametrize("change, says", [
    (lambda d: d["tables"]["runs/throughput.csv"][0].pop("batch_size"),
     r"'runs/throughput.csv' row 1 has no 'batch_size'"),
    (lambda d: d["tables"]["runs/throughput.csv"][0].update(img_per_s="fast"),
     r"'runs/throughput.csv' row 1: 'img_per_s' must be a number, got 'fast'"),
    (lambda d: d["tables"]["runs/lr.csv"][0].update({"TRAIN.LR": "abc"}),
     r"'runs/lr.csv' row 1: 'TRAIN.LR' must be a number"),
    (lambda d: d["tables"]["runs/lr.csv"][1].pop("name"), r"'runs/lr.csv' row 2 has no 'name'"),
    (lambda d: [run.update(history=[]) for run in d["runs"].values()], r"run 'runs/lr/lr=0.0001' has no history"),
])
def test_a_malformed_sweep_table_is_one_error_naming_it(tmp_path, change, says):
    out = _results(tmp_path)
    path = _damage(out, "05_sweeps", change)
    sheet = tmp_path / "worksheet.md"
    sheet.write_text(WORKSHEET)
    with pytest.raises(ws.WorksheetError, match=rf"^{path}: .*{says}"):
        ws.regenerate(out, sheet)


def test_the_command_says_a_malformed_results_file_in_one_line(tmp_path, capsys):
    from nmeplib import cli

    out = _results(tmp_path)
    (out / "03_training" / "results.json").write_text("[]")
    sheet = tmp_path / "worksheet.md"
    sheet.write_text(WORKSHEET)
    assert cli.main(["worksheet", str(out), "--worksheet", str(sheet)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {out / '03_training' / 'results.json'}: "), err
