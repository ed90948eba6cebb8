"""``nmeplib.course.results``: the measured results folder, its manifests and machines."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from nmeplib.course import results


@pytest.mark.parametrize("device, machine", [
    ("NVIDIA H100 80GB HBM3", {"gpu": "NVIDIA H100 80GB HBM3", "cpu": None, "cores": None}),
    ("CPU (2 cores, x86_64)", {"gpu": None, "cpu": "Test CPU @ 2.0GHz", "cores": 2}),
])
def test_older_manifest_device_text_reads_as_a_machine(monkeypatch, device, machine):
    monkeypatch.setattr(results, "cpu_model", lambda: "Test CPU @ 2.0GHz")
    recorded = {"device": device, "torch": "2.3.1", "python": "3.11.7", "load_average": 0.5}
    assert results.as_machine(recorded) == {**machine, "torch": "2.3.1", "python": "3.11.7", "load_average": 0.5}


def test_a_machine_recorded_in_fields_is_kept_as_it_is():
    recorded = {"gpu": None, "cpu": "Test CPU", "cores": 4, "torch": "2.3.1", "python": "3.11.7",
                "load_average": None}
    assert results.as_machine(recorded) == recorded


def _git(repo, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                          capture_output=True, text=True, timeout=60).stdout.strip()


def test_working_commit_is_the_short_head_marked_when_tracked_files_changed(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert results.working_commit() == "?"
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.chdir(repo)
    (repo / "a.txt").write_text("one\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "a.txt")
    _git(repo, "commit", "-qm", "first")
    head = _git(repo, "rev-parse", "--short", "HEAD")
    (repo / "untracked.txt").write_text("not part of the commit\n")
    assert results.working_commit() == head
    (repo / "a.txt").write_text("two\n")
    assert results.working_commit() == f"{head}+changes"


@pytest.mark.parametrize("machine, tag", [
    ({"gpu": "NVIDIA H100 80GB HBM3", "cores": 16}, "nvidia-h100-80gb-hbm3"),
    ({"gpu": " Tesla T4 (PCIe) ", "cores": 4}, "tesla-t4-pcie"),
    ({"gpu": None, "cpu": "X", "cores": 2}, "cpu-2core"),
    ({"gpu": None}, "cpu-?core"),
])
def test_machine_tag_names_the_gpu_else_the_cores(machine, tag):
    assert results.machine_tag(machine) == tag


def _write_result(root, name: str, date: str, machine: dict, **extra) -> Path:
    manifest = results.manifest(name, parts="5.2", parameters={}, scale="cpu", command="c", data="d",
                                machine=machine, date=date, commit="abc")
    folder = root / name / results.folder_name(manifest)
    folder.mkdir(parents=True)
    (folder / results.MANIFEST).write_text(json.dumps({**manifest, **extra}))
    return folder


def test_load_and_on_machine_take_the_newest_result_of_each_machine(tmp_path):
    cpu, gpu = {"gpu": None, "cores": 2}, {"gpu": "NVIDIA H200", "cores": 16}
    old = _write_result(tmp_path, "05_lr", "2026-11-30", cpu)
    new = _write_result(tmp_path, "05_lr", "2026-12-07", cpu)
    on_gpu = _write_result(tmp_path, "05_lr", "2026-12-01", gpu)
    found = results.load(tmp_path)
    assert [r["folder"] for r in found["05_lr"]] == [str(old), str(on_gpu), str(new)]
    assert results.machines(found) == ["nvidia-h200", "cpu-2core"]
    assert results.on_machine(found, "cpu-2core")["05_lr"]["folder"] == str(new)
    assert results.on_machine(found, "nvidia-h200")["05_lr"]["folder"] == str(on_gpu)
    assert results.on_machine(found, "cpu-8core") == {}


def test_load_refuses_a_manifest_of_another_experiment(tmp_path):
    folder = _write_result(tmp_path, "05_lr", "2026-12-07", {"gpu": None, "cores": 2}, experiment="06_resnet")
    with pytest.raises(results.ResultsError) as err:
        results.load(tmp_path)
    assert str(err.value) == (f"{folder}: no readable manifest.json for 05_lr; run the experiment's reproduce "
                              f"command again to rewrite it")


def test_collect_reads_runs_tables_figures_and_score(tmp_path):
    run = tmp_path / "runs" / "alexnet"
    run.mkdir(parents=True)
    config = {"DATA": {"DATASET": "cifar10", "IMG_SIZE": 64, "BATCH_SIZE": 128, "AUGMENT": "flip"},
              "TRAIN": {"LR": 0.001}}
    (run / "summary.json").write_text(json.dumps({"best_val_acc": 0.5, "config": config}))
    (run / "metrics.jsonl").write_text('{"epoch": 1, "val_acc": 0.4}\n{"epoch": 2, "val_acc": 0.5}\n')
    (tmp_path / "runs" / "lr.csv").write_text("name,acc\nlr=0.1,0.3\n")
    (tmp_path / "runs" / "submission.csv").write_text("Id,Category\n0,1\n")
    (tmp_path / "runs" / "predictions.png").write_bytes(b"png")
    (tmp_path / "runs" / "score.json").write_text('{"accuracy": 0.25}')
    assert results.collect(tmp_path) == {
        "runs": {"runs/alexnet": {
            "best_val_acc": 0.5,
            "settings": {"model": None, "dataset": "cifar10", "img_size": 64, "batch_size": 128, "lr": 0.001,
                         "augment": "flip", "train_subset": None},
            "history": [{"epoch": 1, "val_acc": 0.4}, {"epoch": 2, "val_acc": 0.5}]}},
        "tables": {"runs/lr.csv": [{"name": "lr=0.1", "acc": "0.3"}]},
        "figures": ["runs/predictions.png"],
        "submission": None,
        "score": {"accuracy": 0.25},
    }
