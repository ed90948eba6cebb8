"""``python -m nmeplib reproduce``: the plan, skipping and resuming by manifest, a smoke run
through papermill, and the course server's data layouts."""
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nmeplib.course import reproduce as rp
from nmeplib.config import load_config
from nmeplib.data import DatasetError
from nmeplib.data import build as data_build

ROOT = Path(__file__).resolve().parents[1]


def test_plan_names_parameters_and_skips_kaggle_without_a_file(tmp_path):
    steps = rp.plan(tmp_path, data_root="/somewhere/cifar")
    assert [s["name"] for s in steps] == list(rp.EXPERIMENTS)
    by_name = {s["name"]: s for s in steps}
    assert by_name["03_training"]["parameters"]["epochs"] == rp.MAIN_EPOCHS
    pieces = [name for name in by_name if name.startswith("05_")]
    assert pieces == ["05_lr", "05_batch_size", "05_throughput", "05_augment", "05_variations"]
    for name in pieces:   # each piece runs one section of 05_sweeps.ipynb
        assert by_name[name]["notebook"] == "05_sweeps.ipynb"
        assert by_name[name]["parameters"]["sweeps"] == [name.removeprefix("05_")]
        assert by_name[name]["parameters"]["epochs"] == rp.SWEEP_EPOCHS
    assert by_name["06_resnet"]["parameters"]["alexnet_dir"] == str(tmp_path / "03_training" / "runs" / "alexnet")
    assert by_name["03_training"]["parameters"]["data_root"] == "/somewhere/cifar"
    assert by_name["07_kaggle"]["skip"] and by_name["07_kaggle"]["estimate_s"] == 0
    # the real chain is sized for 15 minutes on one H100 (an estimate from the measured H100 figures)
    assert sum(s["estimate_s"] for s in steps) <= rp.GPU_BUDGET_S


def test_only_and_params(tmp_path):
    steps = rp.plan(tmp_path, only=["03", "sweeps"], params=["epochs=2", "05_sweeps.model=lenet", "05.lr=3e-3"])
    assert [s["name"] for s in steps] == ["03_training", "05_lr", "05_batch_size", "05_throughput", "05_augment",
                                          "05_variations"]
    assert steps[0]["parameters"]["epochs"] == 2 and "model" not in steps[0]["parameters"]
    assert all(s["parameters"]["model"] == "lenet" and s["parameters"]["lr"] == 0.003 for s in steps[1:])
    lr = rp.plan(tmp_path, only=["lr"], params=["lr.epochs=3"])
    assert [s["name"] for s in lr] == ["05_lr"] and lr[0]["parameters"]["epochs"] == 3
    with pytest.raises(rp.ReproduceError, match="unknown experiment.*nope"):
        rp.plan(tmp_path, only=["nope"])
    with pytest.raises(rp.ReproduceError, match="03_training.*no parameter 'model'"):
        rp.plan(tmp_path, params=["03.model=lenet"])
    with pytest.raises(rp.ReproduceError, match="NAME=VALUE"):
        rp.plan(tmp_path, params=["epochs"])
    with pytest.raises(rp.ReproduceError, match="--scale 'gpu'"):
        rp.plan(tmp_path, scale="gpu")


def test_the_cpu_scale_trains_subsets_for_at_least_five_epochs(tmp_path):
    steps = {s["name"]: s for s in rp.plan(tmp_path, scale="cpu", hdf5=str(tmp_path / "x.hdf5"))}
    for name, step in steps.items():
        params = step["parameters"]
        if "epochs" in params:
            assert params["epochs"] >= 5, name
        if name != "03_training" and name in ("05_lr", "06_resnet", "07_kaggle"):
            assert params["train_subset"] > 0, name
    assert steps["03_training"]["parameters"]["alexnet_train_subset"] > 0
    assert sum(s["estimate_s"] for s in steps.values()) <= 95 * 60


def test_manifest_decides_skip_resume_or_refuse(tmp_path):
    step = rp.plan(tmp_path, only=["06"], smoke=True)[0]
    assert rp.state_of(step) == "new"
    folder = Path(step["folder"])
    folder.mkdir(parents=True)
    (folder / rp.MANIFEST).write_text(json.dumps({"parameters": step["parameters"], "state": "running"}))
    assert rp.state_of(step) == "interrupted"
    (folder / rp.MANIFEST).write_text(json.dumps({"parameters": step["parameters"], "state": "finished"}))
    assert rp.state_of(step) == "finished"
    other = {**step["parameters"], "epochs": 99}
    (folder / rp.MANIFEST).write_text(json.dumps({"parameters": other, "state": "finished"}))
    with pytest.raises(rp.ReproduceError, match=r"other parameters \(epochs: 99 -> 30\).*--overwrite"):
        rp.state_of(step)
    assert rp.state_of(step, overwrite=True) == "new" and not folder.exists()


def test_an_interrupted_experiment_resumes_its_notebook(tmp_path, monkeypatch):
    import papermill as pm

    calls = []

    def execute(src, dst, parameters, **kw):   # what papermill leaves: the executed notebook, its record
        calls.append(parameters)
        Path(dst).write_text(json.dumps({"cells": [], "metadata": {"papermill": {
            "parameters": parameters, "end_time": "2026-12-01T00:00:00", "exception": None}}}))
    monkeypatch.setattr(pm, "execute_notebook", execute)
    step = rp.plan(tmp_path, only=["03"], smoke=True)[0]
    folder = Path(step["folder"])
    folder.mkdir(parents=True)
    (folder / rp.MANIFEST).write_text(json.dumps({"parameters": step["parameters"], "state": "running"}))
    lines = []
    rows = rp.reproduce(tmp_path, smoke=True, only=["03"], stream=type("S", (), {
        "write": lambda self, text: lines.append(text), "flush": lambda self: None})())
    assert calls[0]["resume"] is True and rows[0]["status"] == "resumed and finished"
    assert json.loads((folder / rp.MANIFEST).read_text())["attempts"] == 1
    assert any("[1/1] 03_training" in line and "elapsed" in line and "left" in line for line in lines)
    # 05 resumes its sweep members by itself: it gets no resume parameter
    calls.clear()
    sweeps = rp.plan(tmp_path, only=["05"], smoke=True)[0]
    rp._execute(sweeps, resume=True)
    assert "resume" not in calls[0]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_reproduce_smoke_runs_skips_and_keeps_results(tmp_path, capsys):
    """The command itself in smoke mode on its cheapest experiment (03: LeNet and AlexNet on
    digits, one epoch each); the whole chain is the same code with more notebooks."""
    out = tmp_path / "results"
    env = {**os.environ, "NMEPLIB_SMOKE": "1", "WANDB_MODE": "disabled"}
    args = [str(out), "--smoke", "--only", "03", "--param", "epochs=1", "--results", str(tmp_path / "res")]
    first = subprocess.run([sys.executable, "-m", "nmeplib", "reproduce", *args], capture_output=True, text=True,
                           cwd=ROOT, env=env, timeout=280)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "[1/1] 03_training (4.2, 5.0, 5.1): finished in" in first.stdout and "elapsed" in first.stdout
    folder = out / "03_training"
    manifest = json.loads((folder / rp.MANIFEST).read_text())
    assert manifest["state"] == "finished" and manifest["smoke"] is True and manifest["machine"]["torch"]
    assert manifest["parameters"]["epochs"] == 1
    assert (folder / "03_training.ipynb").is_file() and (folder / "runs" / "lenet_vs_alexnet.png").is_file()
    results = json.loads((folder / rp.RESULTS).read_text())
    assert set(results["runs"]) == {"runs/lenet", "runs/alexnet"}
    assert all(len(run["history"]) == 1 for run in results["runs"].values())
    exported = next((tmp_path / "res" / "03_training").iterdir())
    assert exported.name.endswith("_smoke") and not list(exported.rglob("*.pt"))
    assert sorted(p.relative_to(exported).as_posix() for p in exported.rglob("*.jsonl")) == [
        "runs/alexnet/metrics.jsonl", "runs/lenet/metrics.jsonl"]
    assert json.loads((exported / "manifest.json").read_text())["command"].endswith("--results " + str(tmp_path / "res"))
    # the same command again: finished with the same parameters, so nothing runs
    assert rp.main(args) == 0
    assert "finished earlier with the same parameters" in capsys.readouterr().out


@pytest.mark.slow
def test_reproduce_smoke_whole_chain_then_the_worksheet_from_its_folder(tmp_path, capsys):
    """``reproduce --smoke`` runs every experiment (07 on the demo HDF5 file), and ``worksheet``
    rewrites every results region of a copy of worksheet.md from that one folder."""
    from nmeplib.course import worksheet as ws

    out = tmp_path / "results"
    assert rp.main([str(out), "--smoke", "--param", "epochs=1", "--results", str(tmp_path / "res")]) == 0
    printed = capsys.readouterr().out
    for i, name in enumerate(rp.EXPERIMENTS, 1):
        assert f"[{i}/{len(rp.EXPERIMENTS)}] {name}" in printed
        manifest = json.loads((out / name / rp.MANIFEST).read_text())
        assert manifest["state"] == "finished" and manifest["smoke"] is True
        executed = out / name / rp.EXPERIMENTS[name]["notebook"]   # 05's pieces each run 05_sweeps.ipynb
        assert executed.is_file() and (out / name / rp.RESULTS).is_file()
    sheet = tmp_path / "worksheet.md"
    sheet.write_text((ROOT / "worksheet.md").read_text())
    fates = ws.regenerate(tmp_path / "res", sheet, stream=io.StringIO())
    assert fates and not [name for name, fate in fates.items() if fate.startswith("kept")], fates
    assert sheet.read_text().count("SMOKE MODE") >= len(fates)
    assert list((tmp_path / ws.FIGURES).glob("*.png"))


# ----------------------------------------------------------------------------- course data layouts

def _layouts(tmp_path, monkeypatch):
    old, new = tmp_path / "data" / "cifar10", tmp_path / "data" / "nmep" / "cv" / "cifar10"
    h_old, h_new = tmp_path / "data" / "mi" / "mi-96.hdf5", tmp_path / "data" / "nmep" / "cv" / "mi-96.hdf5"
    monkeypatch.setitem(data_build.COURSE_ROOTS, "cifar10", (str(old), str(new)))
    monkeypatch.setitem(data_build.COURSE_ROOTS, "medium_imagenet", (str(h_old), str(h_new)))
    data_build._say_used.cache_clear()
    return old, new, h_old, h_new


def test_configs_find_cifar_under_either_layout_and_say_which(tmp_path, monkeypatch, capsys):
    old, new, _, _ = _layouts(tmp_path, monkeypatch)
    config = load_config("alexnet_base", {"DATA.ROOT": str(old)})
    (new / "cifar-10-batches-py").mkdir(parents=True)
    (new / "cifar-10-batches-py" / "batches.meta").write_bytes(b"")
    assert data_build.data_root(config) == str(new)
    assert f"{old} not found, using {new}" in capsys.readouterr().out
    (old / "cifar-10-batches-py").mkdir(parents=True)
    (old / "cifar-10-batches-py" / "batches.meta").write_bytes(b"")
    assert data_build.data_root(config) == str(old)
    assert f"data: {old}" in capsys.readouterr().out
    # a root of the user's own is taken as given
    assert data_build.data_root(load_config("alexnet_base", {"DATA.ROOT": str(tmp_path / "mine")})) == \
        str(tmp_path / "mine")


def test_a_missing_file_names_every_place_looked_at(tmp_path, monkeypatch):
    old, new, h_old, h_new = _layouts(tmp_path, monkeypatch)
    with pytest.raises(DatasetError, match=rf"CIFAR-10.*not found; looked at {old} and {new}.*data_links\.md"):
        data_build.data_root(load_config("alexnet_base", {"DATA.ROOT": str(old)}))
    config = load_config("resnet18_medium_imagenet", {"DATA.ROOT": str(h_new)})
    with pytest.raises(DatasetError, match=rf"MediumImageNet HDF5 file not found; looked at {h_old} and {h_new}"):
        data_build.data_root(config)
    h_old.parent.mkdir(parents=True)
    h_old.write_bytes(b"")
    assert data_build.data_root(config) == str(h_old)


def test_shipped_configs_name_the_course_layouts():
    assert load_config("alexnet_base").DATA.ROOT in data_build.COURSE_ROOTS["cifar10"]
    assert load_config("resnet18_base").DATA.ROOT in data_build.COURSE_ROOTS["cifar10"]
    assert load_config("lenet_base").DATA.ROOT in data_build.COURSE_ROOTS["cifar10"]
    assert load_config("resnet18_medium_imagenet").DATA.ROOT in data_build.COURSE_ROOTS["medium_imagenet"]


# ----------------------------------------------------------------------------- real runs of a stub notebook

STUB_PARAMETERS = 'epochs = 30\noutput_dir = "runs"\nsmoke = None\nresume = False\nfail = False\nsleep = 0.0'
STUB_BODY = """import json, pathlib, time
run = pathlib.Path(output_dir) / "lenet"
run.mkdir(parents=True, exist_ok=True)
with open(run.parent / "executions.txt", "a") as f:
    f.write("ran\\n")
time.sleep(sleep)
if fail:
    raise RuntimeError("stub notebook failed")
history = [{"epoch": 1, "train_acc": 50.0, "val_acc": 40.0, "train_loss": 1.0, "val_loss": 1.2,
            "train_time_s": 0.1, "val_time_s": 0.01, "train_img_per_s": 1000.0, "peak_mem_mb": 1.0}]
(run / "metrics.jsonl").write_text(json.dumps(history[0]) + "\\n")
(run / "summary.json").write_text(json.dumps({"best_val_acc": 40.0, "best_epoch": 1, "final_val_acc": 40.0,
                                              "epochs": epochs, "train_time_s": 0.1}))
"""


def _stub_notebooks(folder: Path) -> Path:
    """03_training.ipynb as a one-second stand-in: one "run" with a summary.json, counted in
    runs/executions.txt; ``fail=True`` raises, ``sleep`` holds it."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell(STUB_PARAMETERS)
    parameters.metadata["tags"] = ["parameters"]
    nb.cells = [parameters, nbformat.v4.new_code_cell(STUB_BODY)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(folder / "03_training.ipynb"))
    return folder


@pytest.fixture
def stub(tmp_path, monkeypatch):
    folder = _stub_notebooks(tmp_path / "stub-notebooks")
    monkeypatch.setattr(rp, "NOTEBOOKS", folder)
    return folder


def _executions(out: Path) -> int:
    path = out / "03_training" / "runs" / "executions.txt"
    return len(path.read_text().splitlines()) if path.is_file() else 0


def _run_stub(out: Path, *params: str, stream=None) -> list[dict]:
    return rp.reproduce(out, only=["03"], params=list(params), stream=stream or io.StringIO())


def test_a_damaged_manifest_of_a_finished_experiment_is_rebuilt_from_its_runs(tmp_path, stub):
    out = tmp_path / "results"
    assert _run_stub(out)[0]["status"] == "finished" and _executions(out) == 1
    manifest = out / "03_training" / rp.MANIFEST
    manifest.write_text(manifest.read_text()[:40])          # truncated
    rows = _run_stub(out)
    assert rows[0]["status"] == "finished" and "rebuilt" in rows[0]["note"], rows
    assert _executions(out) == 1                            # nothing ran again, nothing deleted
    assert json.loads(manifest.read_text())["state"] == "finished"
    (out / "03_training" / rp.MANIFEST).unlink()           # gone altogether: the same
    assert _run_stub(out)[0]["status"] == "finished" and _executions(out) == 1
    # with other parameters it is still refused, naming them
    with pytest.raises(rp.ReproduceError, match=r"other parameters \(epochs: 30 -> 2\)"):
        _run_stub(out, "epochs=2")


def test_a_damaged_manifest_of_a_failed_experiment_resumes_it(tmp_path, stub):
    out = tmp_path / "results"
    rows = _run_stub(out, "03.fail=true")
    manifest = out / "03_training" / rp.MANIFEST
    assert rows[0]["status"] == "failed" and json.loads(manifest.read_text())["state"] == "failed"
    manifest.write_text("{")
    rows = _run_stub(out, "03.fail=true")
    assert rows[0]["status"] == "failed" and _executions(out) == 2   # not taken for finished: ran again


def test_a_moved_results_folder_keeps_its_finished_experiments(tmp_path, stub):
    out = tmp_path / "results"
    _run_stub(out)
    moved = tmp_path / "elsewhere" / "copy"
    moved.parent.mkdir()
    out.rename(moved)
    rows = _run_stub(moved)
    assert rows[0]["status"] == "finished" and rows[0]["note"].startswith("finished earlier")
    assert _executions(moved) == 1
    recorded = json.loads((moved / "03_training" / rp.MANIFEST).read_text())["parameters"]
    assert recorded["output_dir"] == "03_training/runs"     # relative to OUT_DIR


@pytest.mark.timeout(60)
def test_two_reproduce_processes_on_one_folder(tmp_path, stub):
    out = tmp_path / "results"
    code = ("import sys; from pathlib import Path; from nmeplib import cli; from nmeplib.course import reproduce as rp; "
            f"rp.NOTEBOOKS = Path({str(stub)!r}); sys.exit(cli.main(['reproduce', *sys.argv[1:]]))")
    args = [sys.executable, "-c", code, str(out), "--only", "03"]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    first = subprocess.Popen([*args, "--param", "03.sleep=12"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        manifest = out / "03_training" / rp.MANIFEST
        deadline = __import__("time").monotonic() + 40
        while not manifest.is_file() and __import__("time").monotonic() < deadline:
            __import__("time").sleep(0.1)
        assert manifest.is_file(), first.stderr
        second = subprocess.run([*args, "--param", "03.sleep=12"], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=40)
        assert second.returncode == 2, second.stdout + second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "another reproduce" in lines[0], lines
        assert f"pid {first.pid}" in lines[0]
        assert first.wait(timeout=40) == 0, first.stderr
    finally:
        first.kill()
    assert json.loads(manifest.read_text())["state"] == "finished" and _executions(out) == 1


def test_results_folder_under_a_file_is_one_error(tmp_path, capsys):
    from nmeplib import cli

    (tmp_path / "file.txt").write_text("x")
    assert cli.main(["reproduce", str(tmp_path / "file.txt" / "out"), "--only", "03", "--smoke"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "file.txt is a file, not a folder" in err[0], err


def test_param_values_are_checked_against_the_notebook_defaults(tmp_path):
    with pytest.raises(rp.ReproduceError, match=r"epochs='abc'.*an int.*default is 30"):
        rp.plan(tmp_path, params=["epochs=abc"])
    with pytest.raises(rp.ReproduceError, match=r"05_lr\.lrs=0\.1.*a list in 05_sweeps.ipynb"):
        rp.plan(tmp_path, params=["05.lrs=0.1"])
    with pytest.raises(rp.ReproduceError, match=r"epochs=2\.5.*an int"):
        rp.plan(tmp_path, params=["03.epochs=2.5"])
    steps = rp.plan(tmp_path, only=["05"], params=["05.lr=1", "05.lrs=[0.1, 1]", "05.model=lenet",
                                                   "05.overrides=[TRAIN.LR=0.1]"])
    assert steps[0]["parameters"]["lr"] == 1 and steps[0]["parameters"]["lrs"] == [0.1, 1]


def test_a_removed_results_file_of_a_finished_experiment_is_gathered_again(tmp_path, stub):
    out = tmp_path / "results"
    _run_stub(out)
    results = out / "03_training" / rp.RESULTS
    before = json.loads(results.read_text())
    results.unlink()
    rows = _run_stub(out)
    assert rows[0]["status"] == "finished" and f"{rp.RESULTS} rebuilt" in rows[0]["note"] and _executions(out) == 1
    assert json.loads(results.read_text())["runs"] == before["runs"]


# ----------------------------------------------------------------------------- results/ and GPU leases

def _gpu_result(root: Path, name: str, elapsed_s: float, gpu: str = "NVIDIA H100 80GB HBM3") -> None:
    from nmeplib.course import results

    manifest = results.manifest(name, parts="x", parameters={}, scale="full", command="c", data="d",
                                machine={"gpu": gpu, "cores": 16, "torch": "2.11"}, elapsed_s=elapsed_s,
                                date="2026-12-01", commit="abc")
    folder = root / name / results.folder_name(manifest)
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_a_lease_takes_the_most_useful_missing_pieces_that_fit(tmp_path):
    assert rp.lease_pieces(10_000, [tmp_path / "none"])[:2] == ["05_lr", "05_batch_size"]
    _gpu_result(tmp_path, "05_lr", 100)
    _gpu_result(tmp_path, "05_batch_size", 900, gpu="NVIDIA H200")
    taken = rp.lease_pieces(300, [tmp_path])
    assert "05_lr" not in taken and "05_batch_size" not in taken and taken[0] == "05_augment"
    assert sum(rp.H100_ESTIMATE_S[name] for name in taken) <= 300
    # on an H100, the H200's batch-size result is not this GPU's: its recorded 900 s does not fit 300 s
    on_h100 = rp.lease_pieces(300, [tmp_path], gpu="NVIDIA H100 80GB HBM3")
    assert "05_batch_size" not in on_h100 and "05_lr" not in on_h100
    assert rp.lease_pieces(2000, [tmp_path], gpu="NVIDIA H100 80GB HBM3")[:2] == ["05_batch_size", "05_augment"]


def test_export_keeps_small_files_and_replaces_the_folder_whole(tmp_path):
    from nmeplib.course import results

    source = tmp_path / "work" / "05_lr"
    run = source / "runs" / "lr" / "lr=0.001"
    run.mkdir(parents=True)
    for name in ("metrics.jsonl", "summary.json", "checkpoint_last.pt", "curves.png"):
        (run / name).write_text("{}")
    (source / "runs" / "lr.csv").write_text("name\nlr=0.001\n")
    (source / "05_sweeps.ipynb").write_text("{}")
    (source / "runs" / "submission.csv").write_text("Id,Category\n0,3\n1,0\n")
    manifest = results.manifest("05_lr", parts="5.2", parameters={"epochs": 5}, scale="cpu", command="cmd",
                                data="CIFAR-10", machine={"gpu": None, "cpu": "X", "cores": 2}, date="2026-12-07")
    folder = results.export(source, manifest, tmp_path / "results")
    assert folder == tmp_path / "results" / "05_lr" / "2026-12-07_cpu-2core_cpu"
    kept = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert kept == ["manifest.json", "runs/lr.csv", "runs/lr/lr=0.001/metrics.jsonl", "runs/lr/lr=0.001/summary.json",
                    "runs/submission_check.json"]
    assert json.loads((folder / "runs" / "submission_check.json").read_text()) == {
        "header": "Id,Category", "rows": 2, "first_id": 0, "last_id": 1, "min_class": 0, "max_class": 3}
    assert json.loads((folder / "manifest.json").read_text())["machine"]["cores"] == 2
    (source / "runs" / "lr.csv").unlink()
    results.export(source, manifest, tmp_path / "results")
    assert not (folder / "runs" / "lr.csv").exists()
    assert [p.name for p in (tmp_path / "results" / "05_lr").iterdir()] == [folder.name]


def test_usage_names_the_reproduce_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        rp.main(["--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("usage: python -m nmeplib reproduce [-h] [--smoke]")


def test_a_param_is_checked_against_the_type_of_its_default(monkeypatch):
    defaults = {"sizes": "(96, 127)", "smoke": "None", "classes": "{1, 2}", "lr": "3e-3"}
    monkeypatch.setattr(rp, "_inspect", lambda notebook: {n: {"default": d} for n, d in defaults.items()})
    for name, value in (("sizes", [64, 80]), ("smoke", "abc"), ("classes", "abc"), ("lr", 1), ("lr", 0.5)):
        rp.check_param_type(f"05_lr.{name}", "05_sweeps.ipynb", name, value)
    with pytest.raises(rp.ReproduceError) as err:
        rp.check_param_type("05_lr.sizes", "05_sweeps.ipynb", "sizes", "abc")
    assert str(err.value) == ("--param 05_lr.sizes='abc': sizes takes a list in 05_sweeps.ipynb (its default is "
                              "(96, 127)), not a string 'abc'")
    with pytest.raises(rp.ReproduceError, match=r"^--param 05_lr.lr=true: lr takes a number"):
        rp.check_param_type("05_lr.lr", "05_sweeps.ipynb", "lr", True)


def test_progress_counts_new_and_interrupted_experiments_and_shows_each_as_it_ends(monkeypatch, tmp_path):
    class Stream(io.StringIO):
        flushed = ""

        def flush(self):
            self.flushed = self.getvalue()

    ran = []
    monkeypatch.setattr(rp, "_run_step", lambda step, state, out, smoke: ran.append((step["name"], state))
                        or ("resumed and finished" if state == "interrupted" else "finished", ""))
    steps = [{"name": name, "parts": parts, "estimate_s": estimate, "scale": "full", "skip": "no --hdf5 file"}
             for name, parts, estimate in (("03_training", "4.2", 30), ("05_lr", "5.2", 35), ("07_kaggle", "7", 20))]
    states = {"03_training": "new", "05_lr": "interrupted", "07_kaggle": "skipped"}
    stream = Stream()
    rows = rp._run_steps(steps, states, tmp_path, True, stream)
    assert ran == [("03_training", "new"), ("05_lr", "interrupted")]
    assert [(r["experiment"], r["status"], r["note"]) for r in rows] == [
        ("03_training", "finished", ""), ("05_lr", "resumed and finished", ""), ("07_kaggle", "skipped", "no --hdf5 file")]
    assert stream.flushed == stream.getvalue()
    assert re.sub(r"\d+m\d\ds", "T", stream.getvalue()).splitlines() == [
        f"reproduce: 3 experiment(s) into {tmp_path}; about T to run (smoke mode on a 2-core CPU)",
        "[1/3] 03_training (4.2): finished in T | elapsed T, about T left",
        "[2/3] 05_lr (5.2): resumed and finished in T | elapsed T, about T left",
        "[3/3] 07_kaggle (7): skipped in T; no --hdf5 file | elapsed T, about T left"]
    assert stream.getvalue().startswith(f"reproduce: 3 experiment(s) into {tmp_path}; about 1m05s to run")


def test_a_finished_experiment_goes_to_the_results_folder_with_its_manifest(tmp_path):
    out = tmp_path / "out"
    folder = out / "05_lr"
    (folder / "runs" / "lr").mkdir(parents=True)
    (folder / "runs" / "lr.csv").write_text("name\nlr=0.1\n")
    step = {"name": "05_lr", "parts": "5.2", "folder": str(folder), "scale": "full", "command": "reproduce OUT",
            "results_dir": str(tmp_path / "results"), "data_note": "digits",
            "parameters": {"smoke": True, "epochs": 1, "output_dir": str(folder / "runs")}}
    machine = {"gpu": None, "cpu": "X", "cores": 2, "torch": "2.3", "python": "3.11", "load_average": 0.1}
    manifest = {"started": "2026-12-07T10:00:00+00:00", "commit": "abc1234", "machine": machine, "elapsed_s": 12.5}
    exported = rp._export(step, out, manifest)
    assert exported == tmp_path / "results" / "05_lr" / "2026-12-07_cpu-2core_smoke"
    assert json.loads((exported / "manifest.json").read_text()) == {
        "experiment": "05_lr", "parts": "5.2", "scale": "smoke", "data": "digits", "command": "reproduce OUT",
        "commit": "abc1234", "date": "2026-12-07", "machine": machine,
        "parameters": {"smoke": True, "epochs": 1, "output_dir": "05_lr/runs"}, "elapsed_s": 12.5}
    assert (exported / "runs" / "lr.csv").read_text() == "name\nlr=0.1\n"
