"""The pipeline benchmark runs end to end on tiny settings and reports every row and column."""
from __future__ import annotations

import json

import pytest

from helpers import load_benchmark as _load_benchmark, write_cifar


def test_benchmark_reports_every_row_and_column(tmp_path):
    bench = _load_benchmark()
    out = tmp_path / "pipeline.json"
    bench.main(["--images", "192", "--batch-size", "4", "--steps", "2", "--warmup", "1", "--repeats", "1",
                "--min-seconds", "0", "--hdf5-images", "64", "--hdf5-steps", "2", "--threads", "1",
                "--out", str(out)])
    result = json.loads(out.read_text())
    assert "GENERATED" in result["meta"]["data"] and len(result["meta"]["load_avg"]) == 3
    rows = {(r["kind"], r["model"]): r for r in result["rows"]}
    expected = [("steps", m) for m in bench.MODELS] + [("loader", "hdf5"), ("loader", "hdf5 in-process"),
                                                        ("loader", "hdf5 shipped"),
                                                        ("epoch", "lenet")]
    assert sorted(rows) == sorted(expected)
    for key, row in rows.items():
        columns = bench.LOADER_COLUMNS if key[0] == "loader" else bench.TRAIN_COLUMNS
        assert all(row[c] > 0 for c in columns), row
        assert row["steps"] > 0
    assert rows["epoch", "lenet"]["steps"] == 192 // 4   # a whole epoch
    assert all(isinstance(rows[k]["met"], bool) for k in bench.TARGETS if k in rows)


def test_time_to_accuracy_runs_fit(tmp_path):
    bench = _load_benchmark()
    write_cifar(tmp_path, per_batch=16)
    args = bench.parse_args(["--cifar", str(tmp_path), "--acc-epochs", "1", "--acc-set", "MODEL.NAME=lenet",
                             "DATA.BATCH_SIZE=16", "TRAIN.WARMUP_EPOCHS=0"])
    acc = bench.time_to_accuracy(args, tmp_path / "work")
    assert acc["model"] == "lenet" and acc["epochs"] == 1 and acc["epoch_cap"] == 1
    assert acc["reached"] is False and acc["wall_s"] > 0 and acc["train_img_per_s"] > 0


@pytest.mark.slow
def test_smoke_runs_the_full_path_with_progress(tmp_path, capsys):
    bench = _load_benchmark()
    out = tmp_path / "pipeline.json"
    bench.main(["--smoke", "--threads", "1", "--workers", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["meta"]["smoke"] and result["meta"]["steps"] == 0      # whole epochs, as --full
    assert {(r["kind"], r["model"]) for r in result["rows"]} == {("epoch", m) for m in bench.MODELS} | {
        ("loader", "hdf5"), ("loader", "hdf5 in-process"), ("loader", "hdf5 shipped"), ("epoch", "resnet18 hdf5")}
    kaggle = next(r for r in result["rows"] if r["model"] == "resnet18 hdf5")
    assert kaggle["steps"] == 32 // 8 and kaggle["real_epoch_s"] == 1_500_000 / kaggle["ours"]
    acc = result["time_to_accuracy"]
    assert acc["dataset"] == "digits" and acc["epochs"] == 1 and acc["wall_s"] > 0
    printed = capsys.readouterr().out
    assert printed.count(" img/s\n") >= 7 and "one epoch of the real file" in printed and "epoch 1: val acc" in printed   # a line per row and per epoch
