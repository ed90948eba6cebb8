"""``python -m nmeplib worksheet``: measured regions rewritten from a results folder, the same
bytes every time, nothing outside the regions touched."""
import io
import json
from pathlib import Path

import pytest

from nmeplib.course import worksheet as ws
from nmeplib.course.release import ANSWER_BEGIN, ANSWER_END

ROOT = Path(__file__).resolve().parents[1]
MACHINE = {"gpu": "NVIDIA H100 80GB HBM3", "cpu": None, "cores": 16, "torch": "2.11.0+cu130", "python": "3.12",
           "load_average": 0.5}
CPU = {"gpu": None, "cpu": "AMD EPYC", "cores": 2, "torch": "2.14.1", "python": "3.11", "load_average": 0.2}


def _history(epochs, start=30.0):
    return [{"epoch": e, "lr": 1e-3, "train_loss": 2.0 / e, "train_acc": start + 5 * e, "val_loss": 1.9 / e,
             "val_acc": start + 4 * e, "train_time_s": 1.0, "val_time_s": 0.1, "train_img_per_s": 50000.0 + e,
             "peak_mem_mb": 1300.0} for e in range(1, epochs + 1)]


def _write_run(folder, model, epochs):
    history = _history(epochs)
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in history))
    (folder / "summary.json").write_text(json.dumps({
        "best_val_acc": history[-1]["val_acc"], "best_epoch": epochs, "final_val_acc": history[-1]["val_acc"],
        "epochs": epochs, "train_time_s": float(epochs), "num_classes": 10,
        "config": {"MODEL": {"NAME": model}, "DATA": {"DATASET": "cifar10", "IMG_SIZE": 70, "BATCH_SIZE": 256}}}))


def _write_table(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    header = list(rows[0])
    path.write_text(",".join(header) + "\n" + "".join(",".join(str(r[k]) for k in header) + "\n" for r in rows))


def _experiment(root, name, machine=MACHINE, scale="full", date="2026-11-28"):
    manifest = {"experiment": name, "parts": "x", "scale": scale, "data": "CIFAR-10 (test copy)",
                "command": f"python -m nmeplib reproduce OUT --only {name}", "commit": "abc1234", "date": date,
                "machine": machine, "parameters": {}, "elapsed_s": 1.0}
    folder = root / name / f"{date}_{'gpu' if machine.get('gpu') else 'cpu'}_{scale}"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _results(tmp_path, scale="full", machine=MACHINE):
    out = tmp_path / "results"
    folder = _experiment(out, "03_training", machine, scale)
    _write_run(folder / "runs" / "lenet", "lenet", 3)
    _write_run(folder / "runs" / "alexnet", "alexnet", 3)
    folder = _experiment(out, "05_lr", machine, scale)
    for v in ("0.0001", "0.0003"):
        _write_run(folder / "runs" / "lr" / f"lr={v}", "alexnet", 3)
    _write_table(folder / "runs" / "lr.csv", [
        {"name": f"lr={v}", "TRAIN.LR": v, "best_val_acc": acc, "final_val_acc": "41.0", "best_epoch": "3",
         "epochs": "3", "time_per_epoch_s": "1.2", "total_time_s": "3.6", "status": "ran"}
        for v, acc in (("0.0001", "40.5"), ("0.0003", "42.5"))])
    folder = _experiment(out, "05_throughput", machine, scale)
    _write_table(folder / "runs" / "throughput.csv",
                 [{"batch_size": b, "img_per_s": 1000.0 * b, "step_ms": "2.0", "peak_mem_mb": "100", "oom": "False"}
                  for b in (1, 2, 4)] + [{"batch_size": 8, "img_per_s": "", "step_ms": "", "peak_mem_mb": "",
                                          "oom": "True"}])
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
<!-- END ANSWER -->
"""


def _outside(text):
    return ws.REGION.sub(lambda m: m.group(1) + m.group(4), text)


def test_regeneration_rewrites_only_marked_regions_and_is_deterministic(tmp_path):
    out = _results(tmp_path)
    sheet = tmp_path / "worksheet.md"
    sheet.write_text(WORKSHEET)
    ws.regenerate(out, sheet)
    first = sheet.read_text()
    assert _outside(first) == _outside(WORKSHEET)          # not a byte outside the regions
    assert "old table" not in first and "old lr table" not in first
    assert "NVIDIA H100 80GB HBM3, torch 2.11.0+cu130, 2026-11-28; full scale" in first
    assert "Reproduce: `python -m nmeplib reproduce OUT --only 05_lr`" in first
    assert "| LeNet (sigmoid) | all images | 3 |" in first
    assert "![LeNet and AlexNet curves](worksheet_figures/training-nvidia-h100-80gb-hbm3.png)" in first
    assert "largest batch that fits **4**" in first and "out of memory" in first
    assert "Best: 3e-4 at 42.50%; worst: 1e-4 at 40.50%." in first
    figures = {p.name: p.read_bytes() for p in (tmp_path / ws.FIGURES).iterdir()}
    stems = {f"{name}-nvidia-h100-80gb-hbm3" for name in ("training", "lr", "throughput")}
    assert set(figures) == {f"{stem}.{ext}" for stem in stems for ext in ("png", "json")}
    assert sum(len(b) for b in figures.values()) < 400_000
    plotted = json.loads(figures["lr-nvidia-h100-80gb-hbm3.json"])
    assert plotted["data"]["3e-4"]["val_acc"] == [34.0, 38.0, 42.0]
    ws.regenerate(out, sheet)
    assert sheet.read_text() == first
    assert {p.name: p.read_bytes() for p in (tmp_path / ws.FIGURES).iterdir()} == figures


def test_each_machine_gets_its_own_block_gpu_first(tmp_path):
    out = _results(tmp_path)
    cpu = _experiment(out, "05_lr", CPU, "cpu", date="2026-12-07")
    _write_run(cpu / "runs" / "lr" / "lr=0.001", "alexnet", 5)
    _write_table(cpu / "runs" / "lr.csv", [{"name": "lr=0.001", "TRAIN.LR": "0.001", "best_val_acc": "30.0",
                                            "final_val_acc": "29.0", "best_epoch": "5", "time_per_epoch_s": "9.0",
                                            "total_time_s": "45", "status": "ran"}])
    sheet = tmp_path / "worksheet.md"
    sheet.write_text(WORKSHEET)
    ws.regenerate(out, sheet)
    text = sheet.read_text()
    lr = text[text.index("BEGIN RESULTS lr"):text.index("END RESULTS lr")]
    assert lr.index("NVIDIA H100") < lr.index("AMD EPYC, 2 cores") and "CPU scale" in lr
    assert "worksheet_figures/lr-cpu-2core.png" in lr and "worksheet_figures/lr-nvidia-h100-80gb-hbm3.png" in lr


def test_a_region_without_its_experiment_names_it_instead_of_keeping_a_stale_table(tmp_path):
    out = _results(tmp_path)
    sheet = tmp_path / "worksheet.md"
    sheet.write_text(WORKSHEET + "<!-- BEGIN RESULTS resnet -->\nstale\n<!-- END RESULTS resnet -->\n")
    with pytest.raises(ws.WorksheetError, match=r"region 'resnet' reads 06_resnet, and the results folder has none"):
        ws.regenerate(out, sheet)
    assert "stale" in sheet.read_text() and not (tmp_path / ws.FIGURES).exists()


def test_stale_figures_go_when_every_region_is_rewritten(tmp_path):
    out = _results(tmp_path)
    sheet = tmp_path / "worksheet.md"
    sheet.write_text(WORKSHEET)
    (tmp_path / ws.FIGURES).mkdir()
    (tmp_path / ws.FIGURES / "lr.png").write_bytes(b"old")
    ws.regenerate(out, sheet)
    assert not (tmp_path / ws.FIGURES / "lr.png").exists()


def test_smoke_results_are_labelled(tmp_path):
    out = _results(tmp_path, scale="smoke")
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
    assert [p.name for p in (tmp_path / ws.FIGURES).glob("*.png")] == ["lr-nvidia-h100-80gb-hbm3.png"]
    with pytest.raises(ws.WorksheetError, match="unknown region"):
        ws.regenerate(out, sheet, regions=["nope"])


def _damage(out, name, change):
    """Apply ``change`` to what the worksheet reads of experiment ``name`` (its manifest, runs and
    tables as one mapping) by writing the damaged parts back as files."""
    folder = next((out / name).iterdir())
    from nmeplib.course import results as res
    data = {**json.loads((folder / "manifest.json").read_text()), **res.collect(folder)}
    change(data)
    return folder, data


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
    (lambda d: d.update(tables={"runs/x.csv": {"a": 1}}), r"table 'runs/x.csv' must be a list of rows"),
])
def test_malformed_results_are_one_error_naming_the_folder(tmp_path, change, says):
    folder, data = _damage(_results(tmp_path), "03_training", change)
    with pytest.raises(ws.WorksheetError, match=rf"^{folder}: .*{says}"):
        ws.check_results(folder, data)


@pytest.mark.parametrize("edit, says", [
    (lambda f: (f / "runs" / "lenet" / "summary.json").write_text(
        (f / "runs" / "lenet" / "summary.json").read_text().replace('"best_val_acc"', '"x"')),
     r"run 'runs/lenet' has no 'best_val_acc'"),
    (lambda f: (f / "runs" / "lenet" / "metrics.jsonl").write_text(""), r"run 'runs/lenet' has no history.*curves"),
    (lambda f: (f / "manifest.json").write_text("[]"), r"no readable manifest.json"),
])
def test_a_damaged_results_file_is_one_error_and_nothing_is_written(tmp_path, edit, says):
    out = _results(tmp_path)
    folder = next((out / "03_training").iterdir())
    edit(folder)
    sheet = tmp_path / "worksheet.md"
    sheet.write_text(WORKSHEET)
    with pytest.raises(ws.WorksheetError, match=rf"{folder}.*{says}"):
        ws.regenerate(out, sheet)
    assert sheet.read_text() == WORKSHEET and not (tmp_path / ws.FIGURES).exists()


@pytest.mark.parametrize("rows, says", [
    ([{"img_per_s": "1", "oom": "False"}], r"'runs/throughput.csv' row 1 has no 'batch_size'"),
    ([{"batch_size": "1", "img_per_s": "fast", "oom": "False"}],
     r"'runs/throughput.csv' row 1: 'img_per_s' must be a number, got 'fast'"),
    ([{"batch_size": "1", "img_per_s": "", "oom": "False"}], r"'runs/throughput.csv' row 1 has no 'img_per_s'"),
])
def test_a_malformed_sweep_table_is_one_error_naming_it(tmp_path, rows, says):
    out = _results(tmp_path)
    folder = next((out / "05_throughput").iterdir())
    _write_table(folder / "runs" / "throughput.csv", rows)
    sheet = tmp_path / "worksheet.md"
    sheet.write_text(WORKSHEET)
    with pytest.raises(ws.WorksheetError, match=rf"^{folder}: .*{says}"):
        ws.regenerate(out, sheet)


def test_the_command_says_a_malformed_results_folder_in_one_line(tmp_path, capsys):
    from nmeplib import cli

    out = _results(tmp_path)
    folder = next((out / "03_training").iterdir())
    (folder / "manifest.json").write_text("[]")
    sheet = tmp_path / "worksheet.md"
    sheet.write_text(WORKSHEET)
    assert cli.main(["worksheet", str(out), "--worksheet", str(sheet)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {folder}: "), err


def test_the_committed_worksheet_is_what_results_gives(tmp_path):
    """worksheet.md and the figures' numbers are a pure function of results/: regenerating them
    into a copy changes nothing."""
    import shutil

    sheet = tmp_path / "worksheet.md"
    shutil.copy(ROOT / "worksheet.md", sheet)
    ws.regenerate(ROOT / "results", sheet, stream=io.StringIO())
    assert sheet.read_text() == (ROOT / "worksheet.md").read_text(), \
        "worksheet.md differs from what results/ gives: run python -m nmeplib worksheet"
    committed = ROOT / ws.FIGURES
    made = tmp_path / ws.FIGURES
    assert sorted(p.name for p in made.iterdir()) == sorted(p.name for p in committed.iterdir())
    for path in made.glob("*.json"):
        assert path.read_text() == (committed / path.name).read_text(), path.name


def _result(name, **fields):
    return {"experiment": name, "folder": f"results/{name}/2026-11-28_cpu_cpu", "machine": CPU, "scale": "cpu",
            "date": "2026-11-28", "data": "CIFAR-10 (test copy)", "command": f"reproduce --only {name}",
            "runs": {}, "tables": {}, "figures": [], **fields}


def test_examples_region_without_its_figure_is_one_error_naming_the_folder(tmp_path):
    with pytest.raises(ws.WorksheetError) as err:
        ws.region_examples({"01_datasets": _result("01_datasets")}, tmp_path, "examples")
    assert str(err.value) == ("results/01_datasets/2026-11-28_cpu_cpu: no runs/cifar10_examples.png: "
                              "01_datasets.ipynb draws it; run its python -m nmeplib reproduce command again "
                              "to rewrite it")


def test_memory_region_without_recorded_memory_says_so_under_its_heading(tmp_path):
    run = {"settings": {"img_size": 32, "batch_size": 64}, "history": [{"epoch": 1, "val_acc": 10.0}]}
    view = {"03_training": _result("03_training", runs={"runs/lenet": run, "runs/alexnet": run})}
    assert ws.region_memory(view, tmp_path, "memory") == (
        "*03_training on AMD EPYC, 2 cores, torch 2.14.1, 2026-11-28; CPU scale (stratified training subsets, "
        "short runs; not the course-scale figures); CIFAR-10 (test copy); no run recorded its memory.*\n"
        "Reproduce: `reproduce --only 03_training`\n\n", [])


def test_throughput_region_names_the_largest_batch_that_fits_and_the_peak_in_one_panel(tmp_path):
    rows = [{"batch_size": b, "img_per_s": speed, "step_ms": "2.0", "peak_mem_mb": "100", "oom": "False"}
            for b, speed in ((1, 120.4), (2, 480.6), (4, 300.2))]
    rows.append({"batch_size": 8, "img_per_s": "", "step_ms": "", "peak_mem_mb": "", "oom": "True"})
    view = {"05_throughput": _result("05_throughput", tables={"runs/throughput.csv": rows})}
    text, paths = ws.region_throughput(view, tmp_path, "throughput")
    assert text.split("\n\n")[2:] == [
        "alexnet: largest batch that fits **4**; most images/s 481 at batch 2, more than at the largest batch (300).",
        "![throughput vs batch size](worksheet_figures/throughput.png)\n"]
    assert paths == [tmp_path / "throughput.png"]
    png = paths[0].read_bytes()
    assert int.from_bytes(png[16:20], "big") == int(4.2 * ws.FIGURE_DPI)   # one panel wide


@pytest.mark.filterwarnings("error:No artists with labels found to put in legend")
def test_a_sweep_whose_members_all_failed_is_a_table_of_failures(tmp_path):
    rows = [{"name": f"lr={v}", "TRAIN.LR": v, "best_val_acc": "", "final_val_acc": "", "best_epoch": "",
             "epochs": "", "time_per_epoch_s": "", "total_time_s": "", "status": "failed"} for v in ("1", "3")]
    text, _ = ws.region_lr({"05_lr": _result("05_lr", tables={"runs/lr.csv": rows})}, tmp_path, "lr")
    assert text.splitlines()[0].endswith("; CIFAR-10 (test copy); ?, no runs.*")
    assert "| 1 | failed (diverged) | – | – |  | – s |\n| 3 | failed (diverged) | – | – |  | – s |\n" in text
    assert "\n\nEvery member failed.\n\n" in text
    rows[0]["status"] = "ran"
    with pytest.raises(ws.WorksheetError) as err:
        ws.region_lr({"05_lr": _result("05_lr", tables={"runs/lr.csv": rows})}, tmp_path, "lr")
    assert str(err.value) == ("results/05_lr/2026-11-28_cpu_cpu: table 'runs/lr.csv' lists member 'lr=1' but there "
                              "is no run 'runs/lr/lr=1'; run its python -m nmeplib reproduce command again to rewrite it")


def test_malformed_results_messages_in_full():
    numbers = dict.fromkeys(ws.RUN_NUMBERS, 1)
    for data, says in [
        ({"experiment": "x", "runs": [1]}, "'runs' must be a mapping, got a list"),
        ({"experiment": "x", "runs": {"runs/a": {**numbers, "settings": {"model": "m"}, "history": []}}, "tables": {}},
         "run 'runs/a': 'settings' has no 'dataset', 'img_size'"),
        ({"experiment": "x", "runs": {"runs/a": {**numbers, "settings": dict.fromkeys(ws.RUN_SETTINGS, "m")}}},
         "run 'runs/a' has no 'history'"),
        ({"runs": {}}, "no 'experiment'"),
    ]:
        with pytest.raises(ws.WorksheetError) as err:
            ws.check_results("results/x/f", data)
        assert str(err.value) == f"results/x/f: {says}{ws.REBUILD}"
